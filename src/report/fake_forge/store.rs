//! What both fake forges remember and how they answer reads: the statuses
//! posted, served back in each forge's own shape, on a clock the test
//! controls, with counters of the requests that a rollout's budget is
//! made of. Shared, like [`super::rules`], by the library's fake and the
//! end-to-end tests' (tests/common/forge.rs includes it by path); it refers
//! to nothing else in the crate.
//!
//! The shapes are the real forges' as hoist meets them:
//!
//! - GitHub lists a commit's statuses newest first, `per_page` up to 100
//!   (30 when not asked), with `Link` to the next and last pages, and an
//!   `ETag` per page: `If-None-Match` with the current one answers `304`
//!   with no body, which GitHub does not count against the primary rate
//!   limit, so [`Counters`] keeps those apart from full reads. It keeps at
//!   most 1,000 statuses per sha and context and refuses more. Times are
//!   whole seconds, UTC.
//! - Gitea caps every page at 50 (`MAX_RESPONSE_ITEMS`) whatever `limit`
//!   asks (30 when not asked), newest first, `X-Total-Count` and `Link`,
//!   the state under `status`, and times in the server's own zone
//!   (`+02:00` here), no `ETag`.
//! - GitLab lists oldest first, `per_page` up to 100 (20 when not asked),
//!   only the latest status of each name unless `all=true`, with
//!   `X-Page`, `X-Next-Page` (empty on the last page), `X-Total`, and its
//!   own state names (`failed`). A status posted while the name's latest
//!   is still `pending`/`running` moves that job on in place (its
//!   `created_at` stays, `finished_at` is set), as GitLab does; posting the
//!   state it already has is refused.
//!
//! Every answer carries `Date` from the fake's [`Clock`], which a test can
//! fix, move forward, or set off from this machine's clock.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, Uri};

use super::rules::{self, Flavor, Posted, ReadQuery, Refusal};

/// GitHub's limit of statuses per sha and context.
pub const GITHUB_MAX_PER_CONTEXT: usize = 1000;
/// Gitea's default `MAX_RESPONSE_ITEMS`.
pub const GITEA_PAGE_CAP: u64 = 50;

/// The forge's clock: this machine's, or fixed, plus an offset.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    fixed: Option<SystemTime>,
    /// Milliseconds added to the time (negative: behind).
    offset_ms: i64,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        let base = self.fixed.unwrap_or_else(SystemTime::now);
        let off = Duration::from_millis(self.offset_ms.unsigned_abs());
        if self.offset_ms >= 0 {
            base + off
        } else {
            base - off
        }
    }

    /// Stop the clock at `t`.
    pub fn set(&mut self, t: SystemTime) {
        self.fixed = Some(t);
        self.offset_ms = 0;
    }

    /// Move the clock forward by `d` (fixed or running).
    pub fn advance(&mut self, d: Duration) {
        match &mut self.fixed {
            Some(t) => *t += d,
            None => self.offset_ms += d.as_millis() as i64,
        }
    }

    /// Run with this machine's clock, `offset_secs` ahead (negative: behind).
    pub fn skew(&mut self, offset_secs: i64) {
        self.fixed = None;
        self.offset_ms = offset_secs * 1000;
    }
}

/// A status the fake keeps, in the forge's words.
#[derive(Clone, Debug)]
pub struct Stored {
    pub id: u64,
    pub sha: String,
    /// `failed` on GitLab.
    pub state: String,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// GitLab: when the job reached a final state.
    pub finished_at: Option<SystemTime>,
    /// Who posted it (the identity of the token).
    pub creator: String,
}

/// Requests of one identity (one token), as a forge's rate limits see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads answered with statuses (one per page). On GitHub these count
    /// against the primary limit (5,000 an hour per identity).
    pub reads: u64,
    /// Reads answered `304 Not Modified`: free of GitHub's primary limit.
    pub not_modified: u64,
    /// Statuses stored. On GitHub these also count against the secondary
    /// limit on content creation (about 80 a minute, 500 an hour).
    pub writes: u64,
}

/// What a valid request asks.
#[derive(Clone, Debug)]
pub enum Request {
    Read(ReadQuery),
    Post(Posted),
}

/// An answer: status code, headers (beyond `Date` and `Content-Type`),
/// body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn refusal((code, message): Refusal) -> Answer {
        Answer {
            code,
            headers: Vec::new(),
            body: serde_json::json!({ "message": message }).to_string(),
        }
    }
}

pub struct Store {
    pub flavor: Flavor,
    /// (token, identity); the first is the fake's main token.
    tokens: Vec<(String, String)>,
    pub clock: Clock,
    /// The fake's base URL (`http://127.0.0.1:port`), for `Link` headers.
    base_url: String,
    statuses: Vec<Stored>,
    next_id: u64,
    counters: BTreeMap<String, Counters>,
    writes: BTreeMap<(String, String), u64>,
    /// GitHub: whether pages carry an `ETag` (and so may answer `304`).
    /// Off, every read is a full read, as with a client that never sends
    /// `If-None-Match`: the benchmark compares the two.
    pub etags: bool,
    /// Until then (forge clock), every post is refused as GitHub's
    /// secondary rate limit on content creation refuses it: `403` with
    /// `Retry-After` of the given seconds.
    limit_posts: Option<(SystemTime, u64)>,
}

impl Store {
    pub fn new(flavor: Flavor, token: &str, identity: &str) -> Store {
        Store {
            flavor,
            tokens: vec![(token.to_string(), identity.to_string())],
            clock: Clock::default(),
            base_url: String::new(),
            statuses: Vec::new(),
            next_id: 1000,
            counters: BTreeMap::new(),
            writes: BTreeMap::new(),
            etags: true,
            limit_posts: None,
        }
    }

    /// Refuse every post for `span` from now (forge clock), each with
    /// `Retry-After: retry_after` (seconds), as a rate limit does.
    pub fn limit_posts(&mut self, span: Duration, retry_after: u64) {
        self.limit_posts = Some((self.clock.now() + span, retry_after));
    }

    /// The refusal of a post while the limit lasts.
    pub fn post_limited(&self) -> Option<Answer> {
        let (until, retry_after) = self.limit_posts?;
        (self.clock.now() < until).then(|| Answer {
            code: 403,
            headers: vec![("retry-after".into(), retry_after.to_string())],
            body: serde_json::json!({
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            })
            .to_string(),
        })
    }

    /// Where the fake listens, without a trailing slash.
    pub fn set_base_url(&mut self, url: &str) {
        self.base_url = url.trim_end_matches('/').to_string();
    }

    /// Accept `token` too, counting its requests under `identity` (a host,
    /// as with per-host tokens).
    pub fn add_token(&mut self, token: &str, identity: &str) {
        self.tokens.push((token.to_string(), identity.to_string()));
    }

    /// The counters of `identity`.
    pub fn counters(&self, identity: &str) -> Counters {
        self.counters.get(identity).copied().unwrap_or_default()
    }

    /// Every identity's counters.
    pub fn all_counters(&self) -> BTreeMap<String, Counters> {
        self.counters.clone()
    }

    /// Statuses stored for (`sha`, `context`).
    pub fn writes_for(&self, sha: &str, context: &str) -> u64 {
        self.writes
            .get(&(sha.to_string(), context.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every status stored, oldest first.
    pub fn stored(&self) -> Vec<Stored> {
        self.statuses.clone()
    }

    /// The `Date` header value of now.
    pub fn date_header(&self) -> String {
        httpdate::fmt_http_date(self.clock.now())
    }

    /// Checks a request as the forge would. Ok: what it asks, and the
    /// identity of its token.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Request, String), Refusal> {
        let presented = rules::presented_token(self.flavor, headers);
        let (token, identity) = self
            .tokens
            .iter()
            .find(|(t, _)| Some(t) == presented.as_ref())
            .unwrap_or(&self.tokens[0]);
        let request = if rules::is_read(self.flavor, uri) {
            Request::Read(rules::validate_read(
                self.flavor,
                token,
                method,
                uri,
                headers,
            )?)
        } else {
            Request::Post(rules::validate(
                self.flavor,
                token,
                method,
                uri,
                headers,
                body,
            )?)
        };
        Ok((request, identity.clone()))
    }

    /// Stores a valid post, or refuses it as the forge would.
    pub fn post(&mut self, p: Posted, identity: &str) -> Result<Answer, Refusal> {
        let now = self.clock.now();
        let key = (p.sha.clone(), p.context.clone());
        match self.flavor {
            Flavor::Github => {
                if self.writes.get(&key).copied().unwrap_or(0) >= GITHUB_MAX_PER_CONTEXT as u64 {
                    return Err(rules::refuse(
                        422,
                        "This SHA and context has reached the maximum number of statuses.",
                    ));
                }
            }
            Flavor::Gitea => {}
            Flavor::Gitlab => {
                let latest = self
                    .statuses
                    .iter_mut()
                    .rev()
                    .find(|s| s.sha == p.sha && s.context == p.context);
                if let Some(job) = latest {
                    if job.state == p.state {
                        return Err(rules::cannot_transition(&p.state));
                    }
                    if matches!(job.state.as_str(), "pending" | "running") {
                        job.state = p.state.clone();
                        job.description = p.description.clone();
                        job.target_url = p.target_url.clone();
                        job.updated_at = now;
                        if !matches!(p.state.as_str(), "pending" | "running") {
                            job.finished_at = Some(now);
                        }
                        let id = job.id;
                        self.count_write(key, identity);
                        return Ok(created(id));
                    }
                }
            }
        }
        let final_state = !matches!(p.state.as_str(), "pending" | "running");
        self.next_id += 1;
        let id = self.next_id;
        self.statuses.push(Stored {
            id,
            sha: p.sha,
            state: p.state,
            context: p.context,
            description: p.description,
            target_url: p.target_url,
            created_at: now,
            updated_at: now,
            finished_at: (self.flavor == Flavor::Gitlab && final_state).then_some(now),
            creator: identity.to_string(),
        });
        self.count_write(key, identity);
        Ok(created(id))
    }

    fn count_write(&mut self, key: (String, String), identity: &str) {
        *self.writes.entry(key).or_default() += 1;
        self.counters
            .entry(identity.to_string())
            .or_default()
            .writes += 1;
    }

    /// Answers a valid read in the forge's shape.
    pub fn read(&mut self, q: &ReadQuery, identity: &str) -> Answer {
        let mut list: Vec<&Stored> = self.statuses.iter().filter(|s| s.sha == q.sha).collect();
        let (per_page, newest_first) = match self.flavor {
            Flavor::Github => (q.per_page.unwrap_or(30).clamp(1, 100), true),
            Flavor::Gitea => (
                q.per_page
                    .filter(|n| *n > 0)
                    .unwrap_or(30)
                    .min(GITEA_PAGE_CAP),
                true,
            ),
            Flavor::Gitlab => (q.per_page.unwrap_or(20).clamp(1, 100), false),
        };
        if self.flavor == Flavor::Gitlab && !q.all {
            let mut latest: BTreeMap<&str, &Stored> = BTreeMap::new();
            for s in &list {
                latest.insert(s.context.as_str(), s);
            }
            list = latest.into_values().collect();
        }
        list.sort_by_key(|s| s.id);
        if newest_first {
            list.reverse();
        }
        let total = list.len() as u64;
        let pages = total.div_ceil(per_page).max(1);
        let start = ((q.page - 1) * per_page).min(total) as usize;
        let end = (start + per_page as usize).min(list.len());
        let items: Vec<serde_json::Value> =
            list[start..end].iter().map(|s| self.to_json(s)).collect();
        let body = serde_json::Value::Array(items).to_string();

        let mut headers = Vec::new();
        let path = match self.flavor {
            Flavor::Github => format!("/repos/{}/commits/{}/statuses", rules::REPOSITORY, q.sha),
            Flavor::Gitea => format!(
                "/api/v1/repos/{}/commits/{}/statuses",
                rules::REPOSITORY,
                q.sha
            ),
            Flavor::Gitlab => format!(
                "/api/v4/projects/{}/repository/commits/{}/statuses",
                rules::REPOSITORY.replace('/', "%2F"),
                q.sha
            ),
        };
        let size_key = if self.flavor == Flavor::Gitea {
            "limit"
        } else {
            "per_page"
        };
        let link = |page: u64, rel: &str| {
            format!(
                "<{}{path}?{size_key}={per_page}&page={page}>; rel=\"{rel}\"",
                self.base_url
            )
        };
        let mut links = Vec::new();
        if q.page < pages {
            links.push(link(q.page + 1, "next"));
            links.push(link(pages, "last"));
        }
        if q.page > 1 {
            links.push(link(1, "first"));
            links.push(link((q.page - 1).min(pages), "prev"));
        }
        if !links.is_empty() {
            headers.push(("link".to_string(), links.join(", ")));
        }
        match self.flavor {
            Flavor::Github if self.etags => {
                let etag = etag_of(&body);
                headers.push(("etag".into(), etag.clone()));
                if q.if_none_match.as_deref() == Some(etag.as_str()) {
                    self.counters
                        .entry(identity.to_string())
                        .or_default()
                        .not_modified += 1;
                    return Answer {
                        code: 304,
                        headers,
                        body: String::new(),
                    };
                }
            }
            Flavor::Github => {}
            Flavor::Gitea => headers.push(("x-total-count".into(), total.to_string())),
            Flavor::Gitlab => {
                let next = if q.page < pages {
                    (q.page + 1).to_string()
                } else {
                    String::new()
                };
                let prev = if q.page > 1 {
                    (q.page - 1).to_string()
                } else {
                    String::new()
                };
                for (k, v) in [
                    ("x-page", q.page.to_string()),
                    ("x-per-page", per_page.to_string()),
                    ("x-next-page", next),
                    ("x-prev-page", prev),
                    ("x-total", total.to_string()),
                    ("x-total-pages", pages.to_string()),
                ] {
                    headers.push((k.to_string(), v));
                }
            }
        }
        self.counters.entry(identity.to_string()).or_default().reads += 1;
        Answer {
            code: 200,
            headers,
            body,
        }
    }

    fn to_json(&self, s: &Stored) -> serde_json::Value {
        let creator = serde_json::json!({
            "login": s.creator,
            "id": 7,
            "type": "User",
            "site_admin": false,
        });
        match self.flavor {
            Flavor::Github => serde_json::json!({
                "url": format!("{}/repos/{}/statuses/{}", self.base_url, rules::REPOSITORY, s.sha),
                "avatar_url": null,
                "id": s.id,
                "node_id": format!("SC_{:08x}", s.id),
                "state": s.state,
                "description": s.description,
                "target_url": s.target_url,
                "context": s.context,
                "created_at": humantime::format_rfc3339_seconds(s.created_at).to_string(),
                "updated_at": humantime::format_rfc3339_seconds(s.updated_at).to_string(),
                "creator": creator,
            }),
            Flavor::Gitea => serde_json::json!({
                "id": s.id,
                "status": s.state,
                "target_url": s.target_url.clone().unwrap_or_default(),
                "description": s.description,
                "url": format!("{}/api/v1/repos/{}/statuses/{}", self.base_url, rules::REPOSITORY, s.sha),
                "context": s.context,
                "creator": creator,
                "created_at": in_zone_plus_two(s.created_at),
                "updated_at": in_zone_plus_two(s.updated_at),
            }),
            Flavor::Gitlab => serde_json::json!({
                "id": s.id,
                "sha": s.sha,
                "ref": "main",
                "status": s.state,
                "name": s.context,
                "target_url": s.target_url,
                "description": s.description,
                "created_at": humantime::format_rfc3339_millis(s.created_at).to_string(),
                "started_at": humantime::format_rfc3339_millis(s.created_at).to_string(),
                "finished_at": s.finished_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
                "allow_failure": false,
                "coverage": null,
                "author": { "id": 7, "username": s.creator, "state": "active" },
            }),
        }
    }
}

fn created(id: u64) -> Answer {
    Answer {
        code: 201,
        headers: Vec::new(),
        body: serde_json::json!({ "id": id }).to_string(),
    }
}

/// A weak validator of a page's content.
fn etag_of(body: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("W/\"{:016x}\"", h.finish())
}

/// `t` as Gitea writes it from a server two hours east of UTC:
/// `2026-11-27T12:00:00+02:00`.
fn in_zone_plus_two(t: SystemTime) -> String {
    let shifted = t + Duration::from_secs(2 * 3600);
    let secs = shifted
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let utc = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
    format!("{}+02:00", utc.trim_end_matches('Z'))
}
