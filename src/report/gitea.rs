//! Gitea and Forgejo commit statuses.
//!
//! `POST {api_url}/api/v1/repos/{owner}/{repo}/statuses/{sha}` with JSON
//! `{state, context, description[, target_url]}`, authenticated by
//! `Authorization: token <token>`. `api_url` is the forge's base URL (the
//! one users browse), since Gitea serves its API under `/api/v1`. Gitea's
//! state names match hoist's (`pending`, `success`, `failure`, `error`).

use futures::future::BoxFuture;

use super::forge::{self, Forge};
use super::{PostError, Provider, ProviderSettings, ReportError, Status};

const TOKEN: (&str, &str) = ("Authorization", "token ");
const HEADERS: &[(&str, &str)] = &[("Accept", "application/json")];

#[derive(Debug)]
pub(crate) struct Gitea {
    forge: Forge,
    /// `owner/name`, checked to hold only characters that need no escaping.
    repo: String,
}

impl Gitea {
    pub(crate) fn new(s: &ProviderSettings) -> Result<Gitea, ReportError> {
        let repo = forge::owner_repo(s, "gitea")?;
        let forge = Forge::new(s, "gitea", None)?;
        Ok(Gitea { forge, repo })
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

impl Provider for Gitea {
    fn name(&self) -> &'static str {
        "gitea"
    }

    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async move {
            forge::check_sha("gitea", status)?;
            let url = self.forge.url(&format!(
                "/api/v1/repos/{}/statuses/{}",
                self.repo, status.sha
            ));
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

    const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

    fn status(state: State) -> Status {
        Status {
            sha: SHA.into(),
            state,
            context: "hoist/staging/web-2".into(),
            description: "api failed its health gate; rolled back".into(),
        }
    }

    #[tokio::test]
    async fn posts_what_gitea_expects() {
        let fake = FakeForge::start(Flavor::Gitea).await;
        let all = [State::Pending, State::Success, State::Failure, State::Error];
        let accepted = fake
            .post_states("https://hoist.example.com/web-2", &all, status)
            .await;
        let states: Vec<_> = accepted.iter().map(|a| a.state.as_str()).collect();
        assert_eq!(states, ["pending", "success", "failure", "error"]);
        assert_eq!(accepted[0].sha, SHA);
        assert_eq!(accepted[0].context, "hoist/staging/web-2");
        assert_eq!(
            accepted[0].target_url.as_deref(),
            Some("https://hoist.example.com/web-2")
        );
    }

    #[tokio::test]
    async fn a_github_style_token_header_is_what_gitea_would_refuse() {
        // The fake refuses `Bearer`; hoist must send `token <token>`, which
        // the test above proves. Here: a wrong token is permanent.
        let fake = FakeForge::start(Flavor::Gitea).await;
        let mut s = fake.settings(ProviderKind::Gitea);
        s.token = Some("gitea-secret-wrong".into());
        let p = build_provider(&s).expect("gitea");
        let err = p.post(&status(State::Success)).await.expect_err("401");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("gitea-secret-wrong"));
        assert!(!format!("{p:?}").contains("gitea-secret-wrong"));
    }

    #[test]
    fn api_url_is_required() {
        let s = ProviderSettings::for_test(ProviderKind::Gitea);
        let err = build_provider(&s).expect_err("no url").to_string();
        assert!(
            err.starts_with("status.api_url is required for provider gitea"),
            "{err}"
        );
    }
}
