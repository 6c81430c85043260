//! GitHub (and GitHub Enterprise) commit statuses.
//!
//! `POST {api_url}/repos/{owner}/{repo}/statuses/{sha}` with JSON
//! `{state, context, description[, target_url]}`, authenticated by
//! `Authorization: Bearer <token>`. GitHub's state names are hoist's own, so
//! nothing is mapped. Enterprise servers differ only in `api_url`
//! (`https://ghe.example.com/api/v3`).
//!
//! Reading back: `GET {api_url}/repos/{owner}/{repo}/commits/{sha}/statuses`
//! lists every status of the commit, newest first, up to 100 a page
//! (`per_page=100`), with `Link: rel="next"` to the next page. The first
//! page carries an `ETag`; sent back as `If-None-Match`, an unchanged list
//! answers `304`, which GitHub does not count against the primary rate
//! limit. Since the list is newest first, any new status changes the first
//! page, so a `304` there means nothing changed on any page.

use futures::future::BoxFuture;

use super::forge::{self, Forge};
use super::{
    PostError, Provider, ProviderSettings, Read, ReadError, ReadStatus, ReportError, State, Status,
    StatusRead,
};

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

/// One status as GitHub lists it (fields hoist does not use are ignored).
#[derive(serde::Deserialize)]
struct Listed {
    #[serde(default)]
    id: Option<u64>,
    state: String,
    context: String,
    #[serde(default)]
    description: Option<String>,
    created_at: String,
}

/// GitHub's state names are hoist's; anything else is not a success.
fn state_of(s: &str) -> State {
    match s {
        "pending" => State::Pending,
        "success" => State::Success,
        "failure" => State::Failure,
        _ => State::Error,
    }
}

impl Github {
    async fn read(&self, sha: &str, etag: Option<&str>) -> Result<Read, ReadError> {
        forge::check_read_sha("github", sha)?;
        let mut url = self.forge.url(&format!(
            "/repos/{}/commits/{sha}/statuses?per_page=100",
            self.repo
        ));
        let mut all = Vec::new();
        let (mut first_etag, mut date, mut requests, mut skipped) = (None, None, 0u32, 0usize);
        loop {
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
            let (statuses, bad) = parse_page(&page.body, page.date, all.len())
                .map_err(|e| self.forge.bad_json(&url, &e))?;
            all.extend(statuses);
            skipped += bad;
            if all.len() > forge::MAX_STATUSES {
                return Err(self.forge.too_many(sha));
            }
            match self.forge.next_link(&page.headers)? {
                Some(next) => url = next,
                None => break,
            }
        }
        let mut read = StatusRead::new(all, date.unwrap_or(std::time::UNIX_EPOCH));
        read.etag = first_etag;
        read.requests = requests;
        read.skipped = skipped;
        Ok(Read::Changed(read))
    }
}

/// One page of GitHub's list, answered at `date`, after `before` statuses
/// of earlier pages: the statuses hoist can read and trust, and how many
/// entries it skipped.
pub(crate) fn parse_page(
    body: &[u8],
    date: std::time::SystemTime,
    before: usize,
) -> Result<(Vec<ReadStatus>, usize), serde_json::Error> {
    let (listed, mut skipped) = forge::page_entries::<Listed>(body)?;
    let mut out = Vec::with_capacity(listed.len());
    for (i, l) in listed.into_iter().enumerate() {
        let Some(at) = forge::timestamp(&l.created_at, date) else {
            skipped += 1;
            continue;
        };
        out.push(ReadStatus {
            context: l.context,
            state: state_of(&l.state),
            description: l.description.unwrap_or_default(),
            at,
            // Newest first: without an id, a later place is older.
            order: l
                .id
                .unwrap_or_else(|| u64::MAX.saturating_sub((before + i) as u64)),
        });
    }
    Ok((out, skipped))
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

    /// A fixed moment for the fake's clock: 2027-01-15T08:00:00Z.
    fn t0() -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
    }

    fn on(context: &str, state: State, description: &str) -> Status {
        Status {
            sha: SHA.into(),
            state,
            context: context.into(),
            description: description.into(),
        }
    }

    fn changed(r: Read) -> StatusRead {
        match r {
            Read::Changed(r) => r,
            Read::NotModified { .. } => panic!("expected statuses, got 304"),
        }
    }

    #[tokio::test]
    async fn reads_every_page_newest_first_and_keeps_the_latest_per_context() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.set_time(t0());
        let p = fake.provider();
        // 3 contexts, 250 statuses: three pages of 100. Every status of
        // web-1 is made in the same second, so only GitHub's id orders them.
        for i in 0..83 {
            for host in ["web-1", "web-2", "web-3"] {
                let s = on(
                    &format!("hoist/production/{host}"),
                    State::Pending,
                    &format!("try {i}"),
                );
                p.post(&s).await.expect("posted");
            }
            if i % 2 == 0 {
                fake.advance(std::time::Duration::from_secs(1));
            }
        }
        p.post(&on("hoist/production/web-1", State::Success, "web 2 live"))
            .await
            .expect("posted");
        fake.advance(std::time::Duration::from_secs(30));
        let r = changed(p.statuses(SHA, None).await.expect("read"));
        assert_eq!(r.requests, 3, "250 statuses are three pages of 100");
        assert_eq!(r.date, fake.now(), "the forge's Date");
        let contexts: Vec<_> = r.statuses.iter().map(|s| s.context.as_str()).collect();
        assert_eq!(
            contexts,
            [
                "hoist/production/web-1",
                "hoist/production/web-2",
                "hoist/production/web-3"
            ]
        );
        let web1 = r.get("hoist/production/web-1").expect("web-1");
        assert_eq!(web1.state, State::Success);
        assert_eq!(web1.description, "web 2 live");
        assert_eq!(web1.at, t0() + std::time::Duration::from_secs(42));
        let web3 = r.get("hoist/production/web-3").expect("web-3");
        assert_eq!(
            (web3.state, web3.description.as_str()),
            (State::Pending, "try 82")
        );
        assert_eq!(
            fake.counters(crate::report::fake_forge::MAIN_IDENTITY)
                .reads,
            3
        );
    }

    #[tokio::test]
    async fn an_unchanged_list_is_a_304_that_github_does_not_count() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.set_time(t0());
        let p = fake.provider();
        p.post(&on("hoist/production/web-1", State::Pending, "applying"))
            .await
            .expect("posted");
        let first = changed(p.statuses(SHA, None).await.expect("read"));
        let etag = first.etag.clone().expect("GitHub sends an ETag");
        fake.advance(std::time::Duration::from_secs(15));
        let again = p.statuses(SHA, Some(&etag)).await.expect("read");
        assert_eq!(
            again,
            Read::NotModified {
                date: t0() + std::time::Duration::from_secs(15)
            },
            "the forge's clock moves on even when nothing else does"
        );
        p.post(&on("hoist/production/web-1", State::Success, "live"))
            .await
            .expect("posted");
        let after = changed(p.statuses(SHA, Some(&etag)).await.expect("read"));
        assert_eq!(after.statuses[0].state, State::Success);
        assert_ne!(after.etag.as_deref(), Some(etag.as_str()));
        let c = fake.counters(crate::report::fake_forge::MAIN_IDENTITY);
        assert_eq!((c.reads, c.not_modified, c.writes), (2, 1, 2));
    }

    #[tokio::test]
    async fn a_read_without_statuses_is_empty_and_a_bad_token_is_never_echoed() {
        let fake = FakeForge::start(Flavor::Github).await;
        let p = fake.provider();
        let r = changed(p.statuses(SHA, None).await.expect("read"));
        assert!(r.statuses.is_empty());
        assert_eq!(r.requests, 1);

        let mut s = fake.settings(ProviderKind::Github);
        s.token = Some("ghp_read_secret_wrong".into());
        let p = build_provider(&s).expect("github");
        let err = p.statuses(SHA, None).await.expect_err("401");
        assert!(!err.is_transient(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("401"), "{msg}");
        assert!(
            msg.contains(&format!("/repos/acme/deploy/commits/{SHA}/statuses")),
            "{msg}"
        );
        assert!(!msg.contains("ghp_read_secret_wrong"), "{msg}");
        let err = p.statuses("../../x", None).await.expect_err("not a sha");
        assert!(err.to_string().contains("not a commit id"), "{err}");
    }

    #[tokio::test]
    async fn a_next_page_on_another_host_is_not_followed_with_the_token() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([crate::report::fake_forge::Scripted::status(200)
            .body("[]")
            .header(
                "link",
                "<https://evil.example.com/repos/acme/deploy/commits/x/statuses?page=2>; rel=\"next\"",
            )]);
        let err = fake
            .provider()
            .statuses(SHA, None)
            .await
            .expect_err("refused");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("evil.example.com"), "{err}");
        assert!(!err.to_string().contains(&fake.token), "{err}");
        assert_eq!(fake.attempts().len(), 1, "the link was not followed");
    }

    #[tokio::test]
    async fn a_damaged_entry_is_skipped_and_counted_and_the_rest_is_read() {
        let fake = FakeForge::start(Flavor::Github).await;
        let good = |id: u64, context: &str| {
            format!(
                r#"{{"id":{id},"state":"success","context":"{context}","description":"ok","created_at":"2026-01-15T08:00:00Z"}}"#
            )
        };
        let body = format!(
            "[{},{},{},{},{},{},{},{}]",
            good(5, "hoist/production/web-1"),
            r#"{"id":4,"state":"success","context":5,"created_at":"2026-01-15T08:00:00Z"}"#,
            r#"{"id":3,"state":"failure","context":"hoist/production/web-2","created_at":"9999-12-31T23:59:59Z"}"#,
            r#"{"id":2,"state":"failure","context":"hoist/production/web-2","created_at":"1999-12-31T23:59:59Z"}"#,
            r#"{"id":-1,"state":"failure","context":"hoist/production/web-2","created_at":"2026-01-15T08:00:00Z"}"#,
            r#""not an object""#,
            r#"{"id":1e300,"state":"failure","context":"hoist/production/web-2","created_at":"2026-01-15T08:00:00Z"}"#,
            good(1, "hoist/production/web-3"),
        );
        fake.script([crate::report::fake_forge::Scripted::status(200).body(&body)]);
        let r = changed(fake.provider().statuses(SHA, None).await.expect("read"));
        let contexts: Vec<&str> = r.statuses.iter().map(|s| s.context.as_str()).collect();
        assert_eq!(
            contexts,
            ["hoist/production/web-1", "hoist/production/web-3"]
        );
        assert_eq!(r.skipped, 6);
        // Not a list at all: an error naming the URL, no panic.
        for body in ["{}", "[", "null", &"[".repeat(100_000)] {
            fake.script([crate::report::fake_forge::Scripted::status(200).body(body)]);
            let err = fake
                .provider()
                .statuses(SHA, None)
                .await
                .expect_err("refused");
            assert!(err.is_transient(), "{err}");
            assert!(err.to_string().contains("/statuses"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_forge_without_a_date_cannot_be_read_by_a_rollout() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([crate::report::fake_forge::Scripted::status(200)
            .body("[]")
            .header("date", "yesterday")]);
        let err = fake
            .provider()
            .statuses(SHA, None)
            .await
            .expect_err("no clock");
        assert!(err.is_transient());
        assert!(err.to_string().contains("Date"), "{err}");
    }

    #[tokio::test]
    async fn rate_limits_on_reads_are_worth_retrying_later() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([crate::report::fake_forge::Scripted::status(403)
            .header("x-ratelimit-remaining", "0")
            .header("retry-after", "60")]);
        let err = fake
            .provider()
            .statuses(SHA, None)
            .await
            .expect_err("limited");
        assert_eq!(
            err,
            ReadError::Transient {
                message: format!(
                    "github: GET {}repos/acme/deploy/commits/{SHA}/statuses?per_page=100 answered 403 Forbidden: {{\"message\":\"scripted\"}}",
                    fake.url
                ),
                retry_after: Some(std::time::Duration::from_secs(60)),
            }
        );
    }

    #[tokio::test]
    async fn github_keeps_at_most_1000_statuses_per_sha_and_context() {
        let fake = FakeForge::start(Flavor::Github).await;
        let p = fake.provider();
        let s = on("hoist/production/web-1", State::Pending, "again");
        for _ in 0..1000 {
            p.post(&s).await.expect("posted");
        }
        let err = p.post(&s).await.expect_err("the 1001st is refused");
        assert!(
            err.to_string().contains("maximum number of statuses"),
            "{err}"
        );
        assert_eq!(fake.writes_for(SHA, "hoist/production/web-1"), 1000);
        // Another context on the same sha is still fine.
        p.post(&on("hoist/production/web-2", State::Pending, "x"))
            .await
            .expect("posted");
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
