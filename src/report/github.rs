//! GitHub (and GitHub Enterprise) commit statuses.
//!
//! `POST {api_url}/repos/{owner}/{repo}/statuses/{sha}` with JSON
//! `{state, context, description[, target_url]}`, authenticated by
//! `Authorization: Bearer <token>`. GitHub's state names are hoist's own, so
//! nothing is mapped. Enterprise servers differ only in `api_url`
//! (`https://ghe.example.com/api/v3`).

use futures::future::BoxFuture;

use super::forge::{self, Forge};
use super::{PostError, Provider, ProviderSettings, ReportError, Status};

const DEFAULT_API_URL: &str = "https://api.github.com";
const TOKEN: (&str, &str) = ("Authorization", "Bearer ");
const HEADERS: &[(&str, &str)] = &[
    ("Accept", "application/vnd.github+json"),
    ("X-GitHub-Api-Version", "2022-11-28"),
];

#[derive(Debug)]
pub(crate) struct Github {
    forge: Forge,
    /// `owner/name`, checked to hold only characters that need no escaping.
    repo: String,
}

impl Github {
    pub(crate) fn new(s: &ProviderSettings) -> Result<Github, ReportError> {
        let repo = forge::owner_repo(s, "github")?;
        let forge = Forge::new(s, "github", Some(DEFAULT_API_URL))?;
        Ok(Github { forge, repo })
    }
}

#[derive(serde::Serialize)]
struct Body<'a> {
    state: &'a str,
    context: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

impl Provider for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async move {
            forge::check_sha("github", status)?;
            let url = self
                .forge
                .url(&format!("/repos/{}/statuses/{}", self.repo, status.sha));
            let description = super::truncate_description(&status.description);
            let body = Body {
                state: status.state.as_str(),
                context: &status.context,
                description: &description,
                target_url: self.forge.target_url.as_deref(),
            };
            self.forge
                .post_json(&url, TOKEN, HEADERS, &body, forge::only_2xx)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor};
    use crate::report::{ProviderKind, State, build_provider};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn status(state: State) -> Status {
        Status {
            sha: SHA.into(),
            state,
            context: "hoist/production/web-1".into(),
            description: "web 2026.11.27-3 live in 4.2s; api unchanged".into(),
        }
    }

    #[tokio::test]
    async fn posts_what_github_expects() {
        let fake = FakeForge::start(Flavor::Github).await;
        let all = [State::Pending, State::Success, State::Failure, State::Error];
        let accepted = fake
            .post_states("https://ci.example.com/deploys/1", &all, status)
            .await;
        let states: Vec<_> = accepted.iter().map(|a| a.state.as_str()).collect();
        assert_eq!(states, ["pending", "success", "failure", "error"]);
        assert_eq!(accepted[0].sha, SHA);
        assert_eq!(accepted[0].context, "hoist/production/web-1");
        assert_eq!(
            accepted[0].description,
            "web 2026.11.27-3 live in 4.2s; api unchanged"
        );
        assert_eq!(
            accepted[0].target_url.as_deref(),
            Some("https://ci.example.com/deploys/1")
        );
    }

    #[tokio::test]
    async fn target_url_is_left_out_when_unset() {
        let fake = FakeForge::start(Flavor::Github).await;
        let p = build_provider(&fake.settings(ProviderKind::Github)).expect("github");
        p.post(&status(State::Success)).await.expect("accepted");
        assert_eq!(fake.accepted()[0].target_url, None);
    }

    #[tokio::test]
    async fn a_rejected_token_is_permanent_and_never_echoed() {
        let fake = FakeForge::start(Flavor::Github).await;
        let mut s = fake.settings(ProviderKind::Github);
        s.token = Some("ghp_wrong_but_secret".into());
        let p = build_provider(&s).expect("github");
        let err = p.post(&status(State::Success)).await.expect_err("401");
        assert!(!err.is_transient());
        let msg = err.to_string();
        assert!(msg.contains("401"), "{msg}");
        assert!(msg.contains("/repos/acme/deploy/statuses/"), "{msg}");
        assert!(!msg.contains("ghp_wrong_but_secret"), "{msg}");
        let dbg = format!("{p:?} {err:?}");
        assert!(!dbg.contains("ghp_wrong_but_secret"), "{dbg}");
    }

    #[tokio::test]
    async fn a_sha_that_is_not_a_commit_id_is_not_sent() {
        let fake = FakeForge::start(Flavor::Github).await;
        let p = build_provider(&fake.settings(ProviderKind::Github)).expect("github");
        let mut s = status(State::Success);
        s.sha = "../../admin".into();
        let err = p.post(&s).await.expect_err("refused");
        assert!(!err.is_transient());
        assert!(fake.attempts().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_forge_is_worth_retrying() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let s = ProviderSettings {
            api_url: Some(format!("http://{addr}")),
            token: Some("ghp_unreachable_secret".into()),
            allow_http: true,
            ..ProviderSettings::for_test(ProviderKind::Github)
        };
        let p = build_provider(&s).expect("github");
        let err = p.post(&status(State::Success)).await.expect_err("refused");
        assert!(err.is_transient(), "{err}");
        assert!(!err.to_string().contains("ghp_unreachable_secret"));
    }

    #[test]
    fn api_url_defaults_to_github_com() {
        let s = ProviderSettings::for_test(ProviderKind::Github);
        let p = Github::new(&s).expect("github");
        assert_eq!(
            p.forge.url("/repos/acme/deploy/statuses/x"),
            "https://api.github.com/repos/acme/deploy/statuses/x"
        );
    }

    #[test]
    fn repository_is_required() {
        let s = ProviderSettings {
            repository: None,
            ..ProviderSettings::for_test(ProviderKind::Github)
        };
        let err = build_provider(&s).expect_err("no repo").to_string();
        assert!(
            err.starts_with("status.repository is required for provider github"),
            "{err}"
        );
    }
}
