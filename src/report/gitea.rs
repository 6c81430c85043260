//! Gitea and Forgejo commit statuses.
//!
//! `POST {api_url}/api/v1/repos/{owner}/{repo}/statuses/{sha}` with JSON
//! `{state, context, description[, target_url]}`, authenticated by
//! `Authorization: token <token>`. `api_url` is the forge's base URL (the
//! one users browse), since Gitea serves its API under `/api/v1`. Gitea's
//! state names match hoist's (`pending`, `success`, `failure`, `error`).
//!
//! Reading back: `GET {api_url}/api/v1/repos/{owner}/{repo}/commits/{sha}/statuses`
//! with `page` and `limit`. Gitea caps every page at its
//! `MAX_RESPONSE_ITEMS` (50 by default) whatever `limit` asks, and says
//! how many there are in `X-Total-Count`; pages are read until that many
//! came, or, without the header, until an empty page or one shorter than
//! the first. Gitea lists the status under `status` (not `state`), and has
//! a `warning` state hoist never posts, read as not a success.

use futures::future::BoxFuture;

use super::forge::{self, Forge};
use super::{
    PostError, Provider, ProviderSettings, Read, ReadError, ReadStatus, ReportError, State, Status,
    StatusRead,
};

/// What each page asks for: Gitea's default cap, so a full page is a full
/// page on a default install.
const PAGE_LIMIT: usize = 50;

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

/// One status as Gitea lists it.
#[derive(serde::Deserialize)]
struct Listed {
    #[serde(default)]
    id: Option<u64>,
    status: String,
    context: String,
    #[serde(default)]
    description: Option<String>,
    created_at: String,
}

fn state_of(s: &str) -> State {
    match s {
        "pending" => State::Pending,
        "success" => State::Success,
        "failure" => State::Failure,
        // error, warning, and whatever a newer Gitea adds: not a success.
        _ => State::Error,
    }
}

impl Gitea {
    async fn read(&self, sha: &str, etag: Option<&str>) -> Result<Read, ReadError> {
        forge::check_read_sha("gitea", sha)?;
        let base = self.forge.url(&format!(
            "/api/v1/repos/{}/commits/{sha}/statuses",
            self.repo
        ));
        let mut all = Vec::new();
        let (mut first_etag, mut date, mut first_len) = (None, None, 0usize);
        let (mut requests, mut skipped, mut listed_so_far) = (0u32, 0usize, 0usize);
        loop {
            let page_no = requests + 1;
            let url = format!("{base}?page={page_no}&limit={PAGE_LIMIT}");
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
            let total: Option<usize> = page.header("x-total-count").and_then(|v| v.parse().ok());
            if first {
                first_len = len;
            }
            all.extend(statuses);
            skipped += bad;
            listed_so_far += len;
            if all.len() > forge::MAX_STATUSES || listed_so_far > forge::MAX_STATUSES {
                return Err(self.forge.too_many(sha));
            }
            let done = match total {
                _ if len == 0 => true,
                Some(total) => listed_so_far >= total,
                None => len < first_len,
            };
            if done {
                break;
            }
        }
        let mut read = StatusRead::new(all, date.unwrap_or(std::time::UNIX_EPOCH));
        read.etag = first_etag;
        read.requests = requests;
        read.skipped = skipped;
        Ok(Read::Changed(read))
    }
}

/// One page of Gitea's list, answered at `date`: the statuses hoist can
/// read and trust, how many entries the page listed, and how many of them
/// it skipped.
pub(crate) fn parse_page(
    body: &[u8],
    date: std::time::SystemTime,
) -> Result<(Vec<ReadStatus>, usize, usize), serde_json::Error> {
    let (listed, mut skipped) = forge::page_entries::<Listed>(body)?;
    let len = listed.len() + skipped;
    let mut out = Vec::with_capacity(listed.len());
    for l in listed {
        let Some(at) = forge::timestamp(&l.created_at, date) else {
            skipped += 1;
            continue;
        };
        out.push(ReadStatus {
            context: l.context,
            state: state_of(&l.status),
            description: l.description.unwrap_or_default(),
            at,
            order: l.id.unwrap_or(0),
        });
    }
    Ok((out, len, skipped))
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
    use crate::report::{ProviderKind, Read, State, build_provider};

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

    #[tokio::test]
    async fn reads_pages_capped_at_50_and_times_in_the_servers_zone() {
        let fake = FakeForge::start(Flavor::Gitea).await;
        let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        fake.set_time(t0);
        let p = fake.provider();
        // 120 contexts: pages of 50, 50 and 20.
        for i in 0..120 {
            let s = Status {
                context: format!("hoist/staging/web-{i:03}"),
                ..status(State::Pending)
            };
            p.post(&s).await.expect("posted");
        }
        fake.advance(std::time::Duration::from_secs(90));
        p.post(&Status {
            context: "hoist/staging/web-007".into(),
            ..status(State::Failure)
        })
        .await
        .expect("posted");
        let Read::Changed(r) = p.statuses(SHA, None).await.expect("read") else {
            panic!("Gitea sends no ETag, so there is nothing to compare");
        };
        assert_eq!(r.requests, 3, "121 statuses at 50 a page");
        assert_eq!(r.statuses.len(), 120);
        let web7 = r.get("hoist/staging/web-007").expect("web-007");
        assert_eq!(web7.state, State::Failure);
        // Gitea wrote "...T10:01:30+02:00": the same instant.
        assert_eq!(web7.at, t0 + std::time::Duration::from_secs(90));
        assert_eq!(r.get("hoist/staging/web-119").expect("last").at, t0);
        assert_eq!(r.date, t0 + std::time::Duration::from_secs(90));
    }

    #[tokio::test]
    async fn without_a_total_count_a_short_page_ends_the_read() {
        let fake = FakeForge::start(Flavor::Gitea).await;
        let one = r#"[{"id":1,"status":"success","context":"hoist/staging/a","description":"ok","created_at":"2026-01-15T10:00:00+02:00"}]"#;
        // A first page of two (a server capped at 2), then a short one.
        let two = r#"[{"id":3,"status":"pending","context":"hoist/staging/b","description":"","created_at":"2026-01-15T10:00:01+02:00"},{"id":2,"status":"error","context":"hoist/staging/c","description":"bad","created_at":"2026-01-15T10:00:00+02:00"}]"#;
        fake.script([
            crate::report::fake_forge::Scripted::status(200).body(two),
            crate::report::fake_forge::Scripted::status(200).body(one),
        ]);
        let Read::Changed(r) = fake.provider().statuses(SHA, None).await.expect("read") else {
            panic!("no 304 without an ETag");
        };
        assert_eq!(r.requests, 2, "the short second page is the last");
        let states: Vec<_> = r.statuses.iter().map(|s| s.state).collect();
        assert_eq!(states, [State::Success, State::Pending, State::Error]);
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
