//! GitLab commit statuses.
//!
//! `POST {api_url}/api/v4/projects/{id}/statuses/{sha}` with JSON
//! `{state, name, description[, target_url]}`, authenticated by
//! `PRIVATE-TOKEN: <token>`. Two GitLab quirks are absorbed here:
//!
//! - the project is a numeric id or a `group/sub/project` path that must be
//!   sent url-encoded as one path segment (`group%2Fsub%2Fproject`); a path
//!   given already encoded is accepted too and not encoded twice;
//! - GitLab has no `error` state and calls failure `failed`, so both map to
//!   `failed`; and it refuses a "transition" to the state a status already
//!   has (`400 Cannot transition status via :enqueue from :pending`), which
//!   for hoist means the forge already shows what we wanted: done.

use futures::future::BoxFuture;
use reqwest::StatusCode;

use super::forge::{self, Forge};
use super::{PostError, Provider, ProviderSettings, ReportError, State, Status};

const TOKEN: (&str, &str) = ("PRIVATE-TOKEN", "");
const HEADERS: &[(&str, &str)] = &[("Accept", "application/json")];

#[derive(Debug)]
pub(crate) struct Gitlab {
    forge: Forge,
    /// The project id or the url-encoded project path, ready for the URL.
    project: String,
}

impl Gitlab {
    pub(crate) fn new(s: &ProviderSettings) -> Result<Gitlab, ReportError> {
        let project = project_segment(forge::non_empty(&s.repository))?;
        let forge = Forge::new(s, "gitlab", None)?;
        Ok(Gitlab { forge, project })
    }
}

/// `status.repository` as one URL path segment.
fn project_segment(repository: Option<&str>) -> Result<String, ReportError> {
    let Some(repo) = repository else {
        return Err(ReportError::Config(
            "status.repository is required for provider gitlab (a project id or group/project path)"
                .into(),
        ));
    };
    let invalid = || {
        ReportError::Config(format!(
            "status.repository {repo:?} must be a GitLab project id or a group/project path"
        ))
    };
    let decoded = percent_decode(repo).ok_or_else(invalid)?;
    if decoded.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(decoded);
    }
    let segments: Vec<&str> = decoded.split('/').collect();
    if segments.len() < 2 || !segments.iter().all(|s| forge::repo_segment_ok(s)) {
        return Err(invalid());
    }
    // Every segment holds only unreserved characters, so only `/` needs it.
    Ok(decoded.replace('/', "%2F"))
}

/// Undo `%XX` escapes; `None` on a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// hoist's states in GitLab's words.
fn gitlab_state(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Success => "success",
        State::Failure | State::Error => "failed",
    }
}

/// GitLab's answer when the status already has the state we asked for.
fn already_in_state(code: StatusCode, body: &str) -> bool {
    code == StatusCode::BAD_REQUEST
        && body
            .to_ascii_lowercase()
            .contains("cannot transition status")
}

#[derive(serde::Serialize)]
struct Body<'a> {
    state: &'a str,
    name: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

impl Provider for Gitlab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async move {
            forge::check_sha("gitlab", status)?;
            let url = self.forge.url(&format!(
                "/api/v4/projects/{}/statuses/{}",
                self.project, status.sha
            ));
            let description = super::truncate_description(&status.description);
            let body = Body {
                state: gitlab_state(status.state),
                name: &status.context,
                description: &description,
                target_url: self.forge.target_url.as_deref(),
            };
            self.forge
                .post_json(&url, TOKEN, HEADERS, &body, already_in_state)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor};
    use crate::report::{ProviderKind, build_provider};

    const SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";

    fn status(state: State) -> Status {
        Status {
            sha: SHA.into(),
            state,
            context: "hoist/production/web-1/api".into(),
            description: "api 2026.11.27-3 live in 2.0s".into(),
        }
    }

    #[tokio::test]
    async fn posts_what_gitlab_expects() {
        let fake = FakeForge::start(Flavor::Gitlab).await;
        // Alternate with pending: GitLab refuses a repeated state.
        let states = [
            State::Pending,
            State::Success,
            State::Pending,
            State::Failure,
            State::Pending,
            State::Error,
        ];
        let accepted = fake
            .post_states("https://hoist.example.com/", &states, status)
            .await;
        let states: Vec<_> = accepted.iter().map(|a| a.state.as_str()).collect();
        assert_eq!(
            states,
            [
                "pending", "success", "pending", "failed", "pending", "failed"
            ]
        );
        assert_eq!(accepted[0].sha, SHA);
        assert_eq!(accepted[0].context, "hoist/production/web-1/api");
        assert_eq!(
            accepted[0].target_url.as_deref(),
            Some("https://hoist.example.com/")
        );
    }

    #[tokio::test]
    async fn posting_the_state_gitlab_already_has_is_done() {
        let fake = FakeForge::start(Flavor::Gitlab).await;
        let p = build_provider(&fake.settings(ProviderKind::Gitlab)).expect("gitlab");
        p.post(&status(State::Failure)).await.expect("accepted");
        p.post(&status(State::Error))
            .await
            .expect("failed -> failed is refused by GitLab and means done");
        assert_eq!(fake.attempts().len(), 2);
        assert_eq!(fake.accepted().len(), 1);
    }

    #[tokio::test]
    async fn a_wrong_token_is_permanent_and_never_echoed() {
        let fake = FakeForge::start(Flavor::Gitlab).await;
        let mut s = fake.settings(ProviderKind::Gitlab);
        s.token = Some("glpat-wrong-secret".into());
        let p = build_provider(&s).expect("gitlab");
        let err = p.post(&status(State::Success)).await.expect_err("401");
        assert!(!err.is_transient());
        assert!(
            err.to_string()
                .contains("/api/v4/projects/acme%2Fdeploy/statuses/")
        );
        assert!(!err.to_string().contains("glpat-wrong-secret"));
        assert!(!format!("{p:?}").contains("glpat-wrong-secret"));
    }

    #[test]
    fn project_ids_and_paths_become_one_segment() {
        assert_eq!(project_segment(Some("42")).expect("id"), "42");
        assert_eq!(
            project_segment(Some("acme/deploy")).expect("path"),
            "acme%2Fdeploy"
        );
        assert_eq!(
            project_segment(Some("acme/infra/deploy")).expect("subgroup"),
            "acme%2Finfra%2Fdeploy"
        );
        assert_eq!(
            project_segment(Some("acme%2Fdeploy")).expect("pre-encoded"),
            "acme%2Fdeploy",
            "not encoded twice"
        );
        assert_eq!(
            project_segment(Some("acme%2fdeploy")).expect("lowercase escape"),
            "acme%2Fdeploy"
        );
        for bad in [
            "deploy",
            "acme/",
            "/deploy",
            "acme/../x",
            "acme/de ploy",
            "a%zz/b",
        ] {
            assert!(project_segment(Some(bad)).is_err(), "{bad} accepted");
        }
        let err = project_segment(None).expect_err("missing").to_string();
        assert!(err.starts_with("status.repository is required for provider gitlab"));
    }

    #[test]
    fn states_map_to_gitlab_names() {
        assert_eq!(gitlab_state(State::Pending), "pending");
        assert_eq!(gitlab_state(State::Success), "success");
        assert_eq!(gitlab_state(State::Failure), "failed");
        assert_eq!(gitlab_state(State::Error), "failed");
    }

    #[test]
    fn same_state_transition_counts_as_done() {
        assert!(already_in_state(
            StatusCode::BAD_REQUEST,
            r#"{"message":"Cannot transition status via :run from :running"}"#
        ));
        assert!(!already_in_state(
            StatusCode::BAD_REQUEST,
            r#"{"message":"state is invalid"}"#
        ));
        assert!(!already_in_state(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Cannot transition status"
        ));
    }
}
