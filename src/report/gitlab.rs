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
//!
//! Reading back: `GET {api_url}/api/v4/projects/{id}/repository/commits/{sha}/statuses`
//! with `all=true` (every status, not only the latest of each name: a
//! rollout needs the earliest status of a release and every `down`
//! report), `page` and `per_page` (at most 100), the next page named by
//! `X-Next-Page` (empty on the last). A
//! status posted `pending` and then `success` is one GitLab job moved from
//! one state to the next, so its `created_at` is when it was pending: the
//! time of the outcome is `finished_at`, used whenever it is set. GitLab's
//! states are read back as hoist's: `pending`, `running` (and the other
//! not-yet-finished ones) as pending, `failed` and `canceled` as failure,
//! anything else unknown (`skipped`) as error.

use futures::future::BoxFuture;
use reqwest::StatusCode;

use super::forge::{self, Forge};
use super::{
    PostError, Provider, ProviderSettings, Read, ReadError, ReadStatus, ReportError, State, Status,
    StatusRead,
};

const PER_PAGE: usize = 100;

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

/// GitLab's state names read back in hoist's words.
fn state_from_gitlab(s: &str) -> State {
    match s {
        "success" => State::Success,
        "pending"
        | "running"
        | "created"
        | "waiting_for_resource"
        | "preparing"
        | "scheduled"
        | "manual" => State::Pending,
        "failed" | "canceled" => State::Failure,
        _ => State::Error,
    }
}

/// One status as GitLab lists it.
#[derive(serde::Deserialize)]
struct Listed {
    #[serde(default)]
    id: Option<u64>,
    status: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    created_at: String,
    #[serde(default)]
    finished_at: Option<String>,
}

impl Gitlab {
    async fn read(&self, sha: &str, etag: Option<&str>) -> Result<Read, ReadError> {
        forge::check_read_sha("gitlab", sha)?;
        let base = self.forge.url(&format!(
            "/api/v4/projects/{}/repository/commits/{sha}/statuses",
            self.project
        ));
        let mut all = Vec::new();
        let (mut first_etag, mut date) = (None, None);
        let (mut requests, mut page_no, mut skipped) = (0u32, 1u64, 0usize);
        loop {
            let url = format!("{base}?all=true&per_page={PER_PAGE}&page={page_no}");
            let first = requests == 0;
            let page = self
                .forge
                .get(&url, TOKEN, HEADERS, if first { etag } else { None })
                .await?;
            requests += 1;
            if page.not_modified {
                return Ok(Read::NotModified { date: page.date });
            }
            if first {
                first_etag = page.etag();
            }
            date = date.max(Some(page.date));
            let (statuses, len, bad) =
                parse_page(&page.body, page.date).map_err(|e| self.forge.bad_json(&url, &e))?;
            all.extend(statuses);
            skipped += bad;
            if all.len() > forge::MAX_STATUSES {
                return Err(self.forge.too_many(sha));
            }
            let next = match page.header("x-next-page") {
                // The header is there: it alone says whether a page follows.
                Some(v) => v.parse::<u64>().ok(),
                None if len == PER_PAGE => Some(page_no + 1),
                None => None,
            };
            match next {
                Some(n) if n > page_no && len > 0 => page_no = n,
                _ => break,
            }
        }
        let mut read = StatusRead::new(all, date.unwrap_or(std::time::UNIX_EPOCH));
        read.etag = first_etag;
        read.requests = requests;
        read.skipped = skipped;
        Ok(Read::Changed(read))
    }
}

/// One page of GitLab's list (`all=true`), answered at `date`: the
/// statuses hoist can read and trust, how many entries the page listed,
/// and how many of them it skipped. A job moved on in place (posted
/// `pending`, then its outcome) is read as what was posted: a `pending` at
/// its `created_at`, then the outcome at its `finished_at`.
pub(crate) fn parse_page(
    body: &[u8],
    date: std::time::SystemTime,
) -> Result<(Vec<ReadStatus>, usize, usize), serde_json::Error> {
    let (listed, mut skipped) = forge::page_entries::<Listed>(body)?;
    let len = listed.len() + skipped;
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        let created = forge::timestamp(&l.created_at, date);
        let finished = match l.finished_at.as_deref() {
            Some(f) => match forge::timestamp(f, date) {
                Some(t) => Some(t),
                None => {
                    skipped += 1;
                    continue;
                }
            },
            None => None,
        };
        let Some(at) = finished.or(created) else {
            skipped += 1;
            continue;
        };
        let order = l.id.unwrap_or(0);
        let state = state_from_gitlab(&l.status);
        if let Some(c) = created.filter(|c| *c < at && state != State::Pending) {
            out.push(ReadStatus {
                context: l.name.clone(),
                state: State::Pending,
                description: String::new(),
                at: c,
                order,
            });
        }
        out.push(ReadStatus {
            context: l.name,
            state,
            description: l.description.unwrap_or_default(),
            at,
            order,
        });
    }
    Ok((out, len, skipped))
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

    fn statuses<'a>(
        &'a self,
        sha: &'a str,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, ReadError>> {
        Box::pin(self.read(sha, etag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor};
    use crate::report::{ProviderKind, Read, build_provider};

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

    #[tokio::test]
    async fn reads_gitlab_jobs_moved_on_in_place_and_its_state_names() {
        let fake = FakeForge::start(Flavor::Gitlab).await;
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        fake.set_time(t0);
        let p = fake.provider();
        let on = |context: &str, state| Status {
            context: context.into(),
            ..status(state)
        };
        // 150 names: two pages of 100 (X-Next-Page), only the latest each.
        for i in 0..150 {
            p.post(&on(&format!("hoist/production/web-{i:03}"), State::Pending))
                .await
                .expect("posted");
        }
        fake.advance(std::time::Duration::from_secs(42));
        p.post(&on("hoist/production/web-000", State::Success))
            .await
            .expect("posted");
        p.post(&on("hoist/production/web-001", State::Failure))
            .await
            .expect("posted");
        let Read::Changed(r) = p.statuses(SHA, None).await.expect("read") else {
            panic!("no 304 without an ETag");
        };
        assert_eq!(r.requests, 2);
        assert_eq!(r.statuses.len(), 150);
        let ok = r.get("hoist/production/web-000").expect("web-000");
        assert_eq!(ok.state, State::Success);
        assert_eq!(
            ok.at,
            t0 + std::time::Duration::from_secs(42),
            "finished_at, not the created_at of the pending job"
        );
        assert_eq!(
            r.get("hoist/production/web-001").expect("web-001").state,
            State::Failure,
            "GitLab's failed"
        );
        let waiting = r.get("hoist/production/web-149").expect("web-149");
        assert_eq!((waiting.state, waiting.at), (State::Pending, t0));
        // The pending jobs were moved on, not added to.
        assert_eq!(fake.writes_for(SHA, "hoist/production/web-000"), 2);
    }

    #[tokio::test]
    async fn every_status_is_read_and_a_job_moved_on_in_place_is_its_pending_then_its_outcome() {
        let fake = FakeForge::start(Flavor::Gitlab).await;
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        fake.set_time(t0);
        let p = fake.provider();
        let on = |state| Status {
            context: "hoist/production/web-1".into(),
            ..status(state)
        };
        p.post(&on(State::Pending)).await.expect("posted");
        fake.advance(std::time::Duration::from_secs(30));
        p.post(&on(State::Success)).await.expect("posted");
        fake.advance(std::time::Duration::from_secs(30));
        p.post(&on(State::Failure)).await.expect("posted");
        let Read::Changed(r) = p.statuses(SHA, None).await.expect("read") else {
            panic!("no 304 without an ETag");
        };
        let all: Vec<(State, u64)> = r
            .all
            .iter()
            .map(|s| {
                (
                    s.state,
                    s.at.duration_since(t0).expect("after t0").as_secs(),
                )
            })
            .collect();
        assert_eq!(
            all,
            [
                (State::Pending, 0),
                (State::Success, 30),
                (State::Failure, 60)
            ],
            "the first status of the release is the pending at 0"
        );
        assert_eq!(
            r.get("hoist/production/web-1").map(|s| s.state),
            Some(State::Failure)
        );
        assert!(
            fake.attempts().len() >= 4,
            "every page read with all=true (the fake refuses unknown parameters)"
        );
    }

    #[test]
    fn gitlab_states_read_back_in_hoists_words() {
        assert_eq!(state_from_gitlab("success"), State::Success);
        for s in ["pending", "running", "created", "manual", "scheduled"] {
            assert_eq!(state_from_gitlab(s), State::Pending, "{s}");
        }
        assert_eq!(state_from_gitlab("failed"), State::Failure);
        assert_eq!(state_from_gitlab("canceled"), State::Failure);
        assert_eq!(state_from_gitlab("skipped"), State::Error);
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
