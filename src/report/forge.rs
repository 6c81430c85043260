//! HTTP plumbing shared by the forge providers (GitHub, Gitea, GitLab).
//!
//! The three forges differ only in URL shape, auth header and body; the rest
//! is the same and lives here so it is decided once:
//!
//! - which `api_url` is acceptable (https unless `allow_http`, never with
//!   credentials in it — the token goes in `status.token_file`), and how it
//!   is joined with a path whatever its trailing slash;
//! - the HTTP client (timeouts, `User-Agent: hoist/<version>`, extra CAs from
//!   `ca_file`, no redirects so the auth header never follows one elsewhere);
//! - how a forge's answer maps to done / retry (when) / give up, which is
//!   what the [`Reporter`](super::Reporter) acts on;
//! - reading: one conditional GET of one page (`If-None-Match`, `304`), the
//!   forge's `Date`, a bounded body, `Link: rel="next"` followed only to the
//!   `api_url`'s own origin (the token must never go elsewhere), and the
//!   forge's timestamps (RFC 3339, with or without an offset);
//! - keeping the token out of every message: it is held in a [`Secret`]
//!   whose `Debug` is redacted, header values carrying it are marked
//!   sensitive, and any quoted forge answer is scrubbed of it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};

use super::{PostError, ProviderSettings, ReadError, ReportError, Status};

/// How long one attempt may take before it counts as a network failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a forge's answer quoted in an error message.
const EXCERPT_CHARS: usize = 200;
/// The most of a forge's answer read at all.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A wait the forge asks for (`Retry-After`, a rate limit's reset) is
/// honoured however long, up to this: a day. Forges ask for at most an hour
/// (GitHub's primary limit resets hourly); a longer one is a garbled
/// header, and after a day hoist asks again (and waits again if told to).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The most of one page of statuses read (GitHub's 100 statuses with their
/// `creator` objects are about 200 KiB).
const MAX_PAGE_BYTES: usize = 8 << 20;
/// The most statuses one commit may have before a read gives up: far more
/// than 100 servers ever write (at most four each per commit), and GitHub
/// keeps at most 1,000 per context. A read that stopped early could miss a
/// failure, so it is an error rather than a partial answer.
pub(crate) const MAX_STATUSES: usize = 10_000;

/// A token. `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What every forge provider holds: a client, the API base, the token.
#[derive(Debug)]
pub(crate) struct Forge {
    pub(crate) provider: &'static str,
    client: reqwest::Client,
    /// `api_url` without its trailing slash.
    base: String,
    token: Secret,
    pub(crate) target_url: Option<String>,
}

impl Forge {
    /// Check the keys every forge needs and build the client.
    /// `default_api_url` is GitHub's public API; the others have none.
    pub(crate) fn new(
        s: &ProviderSettings,
        provider: &'static str,
        default_api_url: Option<&str>,
    ) -> Result<Forge, ReportError> {
        let api_url = match (non_empty(&s.api_url), default_api_url) {
            (Some(url), _) => url,
            (None, Some(default)) => default,
            (None, None) => {
                return Err(ReportError::Config(format!(
                    "status.api_url is required for provider {provider} (the base URL of the forge, e.g. https://git.example.com)"
                )));
            }
        };
        let base = api_base(api_url, s.allow_http, provider)?;
        let token = match non_empty(&s.token) {
            Some(t) => Secret(t.to_string()),
            None => {
                return Err(ReportError::Config(format!(
                    "status.token_file is required for provider {provider} (a token allowed to write commit statuses)"
                )));
            }
        };
        if HeaderValue::from_str(token.expose()).is_err() {
            return Err(ReportError::Config(
                "status.token_file holds characters that cannot be sent in an HTTP header".into(),
            ));
        }
        let target_url = match non_empty(&s.target_url) {
            Some(t) => {
                let ok = Url::parse(t)
                    .map(|u| matches!(u.scheme(), "http" | "https"))
                    .unwrap_or(false);
                if !ok {
                    return Err(ReportError::Config(format!(
                        "status target_url must be an http:// or https:// URL for provider {provider}"
                    )));
                }
                Some(t.to_string())
            }
            None => None,
        };
        Ok(Forge {
            provider,
            client: client(s, provider)?,
            base,
            token,
            target_url,
        })
    }

    /// `base` + `path`, where `path` starts with `/`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// An auth header value carrying the token, marked sensitive so that
    /// hyper and reqwest never print it.
    fn auth_value(&self, prefix: &str) -> Result<HeaderValue, PostError> {
        let mut v =
            HeaderValue::from_str(&format!("{prefix}{}", self.token.expose())).map_err(|_| {
                PostError::Permanent {
                    message: format!(
                        "{}: the token cannot be sent in an HTTP header",
                        self.provider
                    ),
                }
            })?;
        v.set_sensitive(true);
        Ok(v)
    }

    /// POST `body` as JSON to `url` with the token in header `token.0`
    /// after the prefix `token.1`, and the forge's other `headers`; then
    /// [`send`](Self::send) it.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        token: (&str, &str),
        headers: &[(&str, &str)],
        body: &impl serde::Serialize,
        done_on: impl Fn(StatusCode, &str) -> bool,
    ) -> Result<(), PostError> {
        let (token_header, prefix) = token;
        let mut req = self
            .client
            .post(url)
            .header(token_header, self.auth_value(prefix)?);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(req.json(body), url, done_on).await
    }

    /// One GET of one page of statuses, conditional when `if_none_match`
    /// is given. The forge's `Date` is required: rollouts compare the
    /// forge's times with the forge's clock, never with this server's.
    pub(crate) async fn get(
        &self,
        url: &str,
        token: (&str, &str),
        headers: &[(&str, &str)],
        if_none_match: Option<&str>,
    ) -> Result<Page, ReadError> {
        let what = format!("{}: GET {url}", self.provider);
        let (token_header, prefix) = token;
        let mut req = self
            .client
            .get(url)
            .header(token_header, self.auth_value(prefix)?);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(tag) = if_none_match.and_then(|t| HeaderValue::from_str(t).ok()) {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let resp = req.send().await.map_err(|e| {
            ReadError::transient(format!("{what} failed: {}", describe_reqwest(&e)))
        })?;
        let code = resp.status();
        let headers = resp.headers().clone();
        if !code.is_success() && code != StatusCode::NOT_MODIFIED {
            let body = read_some(resp).await;
            return Err(classify(
                code,
                &headers,
                &excerpt(&body, self.token.expose()),
                &what,
                forge_now(&headers),
            )
            .into());
        }
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .ok_or_else(|| {
                ReadError::transient(format!(
                    "{what} answered without a valid Date header, so the forge's clock is unknown"
                ))
            })?;
        if code == StatusCode::NOT_MODIFIED {
            return Ok(Page {
                not_modified: true,
                headers,
                body: Vec::new(),
                date,
            });
        }
        let mut resp = resp;
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_PAGE_BYTES {
                        return Err(ReadError::transient(format!(
                            "{what} answered more than {} MiB for one page",
                            MAX_PAGE_BYTES >> 20
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ReadError::transient(format!(
                        "{what} was cut short: {}",
                        describe_reqwest(&e)
                    )));
                }
            }
        }
        Ok(Page {
            not_modified: false,
            headers,
            body,
            date,
        })
    }

    /// The `Link: rel="next"` of a page, if it stays on the `api_url`'s
    /// origin and path; a link elsewhere is refused, since following it
    /// would send the token there.
    pub(crate) fn next_link(&self, headers: &HeaderMap) -> Result<Option<String>, ReadError> {
        let Some(next) = headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| link_rel(v, "next"))
        else {
            return Ok(None);
        };
        let same_place = match (Url::parse(&next), Url::parse(&self.base)) {
            (Ok(n), Ok(b)) => {
                n.origin() == b.origin()
                    && n.path().starts_with(b.path().trim_end_matches('/'))
                    && n.username().is_empty()
                    && n.password().is_none()
            }
            _ => false,
        };
        if same_place {
            Ok(Some(next))
        } else {
            Err(ReadError::Permanent {
                message: format!(
                    "{}: the forge's next-page link {:?} leads away from status.api_url {}; not following it with the token",
                    self.provider,
                    excerpt(&next, self.token.expose()),
                    self.base
                ),
            })
        }
    }

    /// An error for a page whose JSON could not be read, naming the URL.
    pub(crate) fn bad_json(&self, url: &str, e: &serde_json::Error) -> ReadError {
        ReadError::transient(format!(
            "{}: GET {url} answered JSON hoist cannot read as commit statuses: {e}",
            self.provider
        ))
    }

    /// The error when a commit holds more statuses than [`MAX_STATUSES`].
    pub(crate) fn too_many(&self, sha: &str) -> ReadError {
        ReadError::Permanent {
            message: format!(
                "{}: commit {sha} has more than {MAX_STATUSES} statuses; not reading further",
                self.provider
            ),
        }
    }

    /// Send `req` and turn the answer into done / retry / give up.
    ///
    /// `done_on` lets a provider accept a non-2xx answer as success (GitLab's
    /// "cannot transition" to the state it is already in).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        done_on: impl Fn(StatusCode, &str) -> bool,
    ) -> Result<(), PostError> {
        let what = format!("{}: POST {url}", self.provider);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(PostError::Transient {
                    message: format!("{what} failed: {}", describe_reqwest(&e)),
                    retry_after: None,
                });
            }
        };
        let code = resp.status();
        let headers = resp.headers().clone();
        if code.is_success() {
            return Ok(());
        }
        let body = read_some(resp).await;
        if done_on(code, &body) {
            return Ok(());
        }
        Err(classify(
            code,
            &headers,
            &excerpt(&body, self.token.expose()),
            &what,
            forge_now(&headers),
        ))
    }
}

/// One page of a read.
#[derive(Debug)]
pub(crate) struct Page {
    /// `304 Not Modified`: `body` is empty.
    pub(crate) not_modified: bool,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    /// The forge's `Date`.
    pub(crate) date: SystemTime,
}

impl Page {
    /// A header's value as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// The page's `ETag`, to send back as `If-None-Match`.
    pub(crate) fn etag(&self) -> Option<String> {
        self.header("etag").map(str::to_string)
    }
}

/// The URL of the link with relation `rel` in one `Link` header value
/// (RFC 8288: `<url>; rel="next", <url>; rel="last"`).
pub(crate) fn link_rel(value: &str, rel: &str) -> Option<String> {
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let url = &after[..end];
        let params_end = after[end..].find('<').map_or(after.len(), |i| end + i);
        let params = &after[end + 1..params_end];
        let matches = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=").is_some_and(|v| {
                v.trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
            })
        });
        if matches {
            return Some(url.to_string());
        }
        rest = &after[params_end..];
    }
    None
}

/// For [`Forge::post_json`]: only a 2xx answer means done.
pub(crate) fn only_2xx(_: StatusCode, _: &str) -> bool {
    false
}

/// The trimmed value of an optional setting, `None` when absent or blank.
pub(crate) fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Validate `api_url` and return it without a trailing slash.
fn api_base(api_url: &str, allow_http: bool, provider: &str) -> Result<String, ReportError> {
    let url = Url::parse(api_url).map_err(|e| {
        ReportError::Config(format!(
            "status.api_url is not a valid URL for provider {provider}: {e}"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Say nothing of the URL itself: it holds the credentials.
        return Err(ReportError::Config(format!(
            "status.api_url must not contain credentials for provider {provider}; put the token in status.token_file"
        )));
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(ReportError::Config(format!(
                "status.api_url {url} uses plain http://, which is refused unless allow_http is true"
            )));
        }
        other => {
            return Err(ReportError::Config(format!(
                "status.api_url must be an https:// URL for provider {provider}, not {other}://"
            )));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ReportError::Config(format!(
            "status.api_url {} must not have a query or fragment",
            redact_query(&url)
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn redact_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn client(s: &ProviderSettings, provider: &'static str) -> Result<reqwest::Client, ReportError> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")))
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(!s.allow_http);
    if let Some(path) = &s.ca_file {
        let pem = std::fs::read(path).map_err(|e| ReportError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ReportError::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ReportError::CaFile {
                path: path.clone(),
                reason: "no PEM certificate found in it".into(),
            });
        }
        b = b.tls_certs_merge(certs);
    }
    b.build()
        .map_err(|source| ReportError::Client { provider, source })
}

/// A status's sha goes into the URL path: make sure it is a commit id.
pub(crate) fn check_sha(provider: &str, status: &Status) -> Result<(), PostError> {
    let sha = &status.sha;
    let ok = (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(PostError::Permanent {
            message: format!(
                "{provider}: {:?} is not a commit id; status not posted",
                excerpt(sha, "")
            ),
        })
    }
}

/// The sha of a read goes into the URL path: make sure it is a commit id.
pub(crate) fn check_read_sha(provider: &str, sha: &str) -> Result<(), ReadError> {
    let ok = (7..=64).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ReadError::Permanent {
            message: format!(
                "{provider}: {:?} is not a commit id; statuses not read",
                excerpt(sha, "")
            ),
        })
    }
}

/// The entries of one page of statuses: each element of the JSON array is
/// read as `T` on its own, and one that cannot be is skipped and counted
/// (a forge's newer shape, a damaged entry), never the whole read. A body
/// that is not a JSON array is an error.
pub(crate) fn page_entries<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(Vec<T>, usize), serde_json::Error> {
    let values: Vec<serde_json::Value> = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(values.len());
    let mut skipped = 0;
    for v in values {
        match serde_json::from_value::<T>(v) {
            Ok(t) => out.push(t),
            Err(_) => skipped += 1,
        }
    }
    Ok((out, skipped))
}

/// A forge's timestamp, when it is one and can be true at the answer's
/// `date` (see [`crate::status::plausible`]).
pub(crate) fn timestamp(value: &str, date: SystemTime) -> Option<SystemTime> {
    parse_rfc3339(value).filter(|t| crate::status::plausible(*t, date))
}

/// Check one `owner` or `name` segment of `status.repository`.
pub(crate) fn repo_segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parse `owner/name` (GitHub, Gitea).
pub(crate) fn owner_repo(s: &ProviderSettings, provider: &str) -> Result<String, ReportError> {
    let Some(repo) = non_empty(&s.repository) else {
        return Err(ReportError::Config(format!(
            "status.repository is required for provider {provider} (owner/name)"
        )));
    };
    match repo.split_once('/') {
        Some((owner, name)) if repo_segment_ok(owner) && repo_segment_ok(name) => {
            Ok(format!("{owner}/{name}"))
        }
        _ => Err(ReportError::Config(format!(
            "status.repository {repo:?} must be owner/name for provider {provider}"
        ))),
    }
}

/// Read at most [`MAX_BODY_BYTES`] of an answer; errors yield what was read.
async fn read_some(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_BODY_BYTES);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A short, single-line, token-free quote of a forge's answer.
pub(crate) fn excerpt(body: &str, token: &str) -> String {
    let scrubbed = if token.is_empty() {
        body.to_string()
    } else {
        body.replace(token, "<redacted>")
    };
    let mut out = String::new();
    for (count, c) in scrubbed.trim().chars().enumerate() {
        if count == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// reqwest's error chain in one line (its `Display` omits the cause).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request error".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// The forge's clock at an answer: its `Date`, else this machine's. A rate
/// limit's reset is a time on the forge's clock.
fn forge_now(headers: &HeaderMap) -> SystemTime {
    headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
        .unwrap_or_else(SystemTime::now)
}

/// Map a non-success answer to what the reporter does next:
///
/// - wait and try again (network, 5xx, 408, 429, and a rate limit however
///   a forge says it: GitHub's `403` with `Retry-After` or
///   `x-ratelimit-remaining: 0`, GitLab's `RateLimit-Remaining: 0`), after
///   the forge's `Retry-After`, else its rate limit's reset (GitHub's and
///   Gitea's `X-RateLimit-Reset`, GitLab's `RateLimit-Reset`, Unix seconds
///   on the forge's clock, or `RateLimit-ResetTime`), measured from the
///   answer's `Date`;
/// - wait until the settings are fixed: the forge refuses hoist itself
///   (401, 403, 404, 405, a redirect): a token, repository or `api_url`
///   problem that no status gets past;
/// - drop the status: the forge refuses what it says (400, 422, other 4xx).
pub(crate) fn classify(
    code: StatusCode,
    headers: &HeaderMap,
    body_excerpt: &str,
    what: &str,
    now: SystemTime,
) -> PostError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = header("retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .or_else(|| rate_limit_reset(headers, now));
    let mut message = format!("{what} answered {code}");
    if !body_excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(body_excerpt);
    }

    let exhausted = ["x-ratelimit-remaining", "ratelimit-remaining"]
        .iter()
        .any(|h| header(h).map(str::trim) == Some("0"));
    let rate_limited_403 =
        code == StatusCode::FORBIDDEN && (header("retry-after").is_some() || exhausted);
    if code.is_server_error()
        || code == StatusCode::REQUEST_TIMEOUT
        || code == StatusCode::TOO_MANY_REQUESTS
        || rate_limited_403
    {
        return PostError::Transient {
            message,
            retry_after,
        };
    }
    if code.is_redirection() {
        let location = header("location")
            .map(|l| excerpt(l, ""))
            .unwrap_or_default();
        message.push_str(&format!(
            " (a redirect to {location:?}); set status.api_url to the forge's final API address"
        ));
        return PostError::Config { message };
    }
    if matches!(code.as_u16(), 401 | 403 | 404 | 405) {
        return PostError::Config { message };
    }
    PostError::Permanent { message }
}

/// When a rate limit resets, as a wait from `now` (the forge's clock):
/// `X-RateLimit-Reset` (GitHub, Gitea) or `RateLimit-Reset` (GitLab) in
/// Unix seconds (a small number is read as seconds from now, as the IETF
/// draft has it), else GitLab's `RateLimit-ResetTime`, an HTTP-date.
pub(crate) fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let from_secs = |v: &str| -> Option<Duration> {
        let n: u64 = v.trim().parse().ok()?;
        // Before 2001-09-09: seconds from now rather than a Unix time.
        if n < 1_000_000_000 {
            return Some(Duration::from_secs(n));
        }
        let at = UNIX_EPOCH.checked_add(Duration::from_secs(n))?;
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    };
    let wait = ["x-ratelimit-reset", "ratelimit-reset"]
        .iter()
        .find_map(|h| header(h).and_then(from_secs))
        .or_else(|| {
            let at = parse_http_date(header("ratelimit-resettime")?)?;
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        })?;
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `Retry-After` is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = parse_http_date(value)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Parse an RFC 3339 timestamp as forges write them: GitHub
/// `2026-11-27T10:00:00Z`, GitLab `2026-11-27T10:00:00.123Z`, Gitea
/// `2026-11-27T11:00:00+01:00`.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut scaled = String::from(&digits[..digits.len().min(9)]);
        while scaled.len() < 9 {
            scaled.push('0');
        }
        nanos = scaled.parse().ok()?;
    }
    let offset_secs: i64 = match &s[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && matches!(zone.as_bytes()[0], b'+' | b'-') => {
            let zh = num(i + 1..i + 3)?;
            let zm = num(i + 4..i + 6)?;
            if zone.as_bytes()[3] != b':' || zh > 23 || zm > 59 {
                return None;
            }
            let off = zh * 3600 + zm * 60;
            if zone.starts_with('-') { -off } else { off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Parse an HTTP-date (`Date`, `Retry-After`): IMF-fixdate, and the
/// obsolete RFC 850 and asctime forms recipients must still accept.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProviderKind;

    fn settings(api_url: &str) -> ProviderSettings {
        ProviderSettings {
            api_url: Some(api_url.into()),
            ..ProviderSettings::for_test(ProviderKind::Github)
        }
    }

    #[test]
    fn api_url_trailing_slash_is_dropped() {
        let f = Forge::new(&settings("https://ghe.example.com/api/v3/"), "github", None)
            .expect("valid");
        assert_eq!(
            f.url("/repos/a/b/statuses/1"),
            "https://ghe.example.com/api/v3/repos/a/b/statuses/1"
        );
        let f = Forge::new(&settings("https://api.github.com"), "github", None).expect("valid");
        assert_eq!(f.url("/x"), "https://api.github.com/x");
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let err = Forge::new(&settings("http://forge.local"), "gitea", None)
            .expect_err("http refused")
            .to_string();
        assert!(err.contains("allow_http"), "{err}");
        let mut s = settings("http://forge.local");
        s.allow_http = true;
        Forge::new(&s, "gitea", None).expect("allowed");
    }

    #[test]
    fn credentials_in_api_url_are_refused_without_echoing_them() {
        let err = Forge::new(&settings("https://user:hunter2@forge.local"), "gitea", None)
            .expect_err("credentials refused")
            .to_string();
        assert!(err.contains("status.api_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn missing_keys_are_named() {
        let mut s = settings("https://x");
        s.api_url = None;
        let err = Forge::new(&s, "gitlab", None)
            .expect_err("no url")
            .to_string();
        assert!(
            err.starts_with("status.api_url is required for provider gitlab"),
            "{err}"
        );

        let mut s = settings("https://x");
        s.token = Some("  \n".into());
        let err = Forge::new(&s, "github", None)
            .expect_err("no token")
            .to_string();
        assert!(
            err.starts_with("status.token_file is required for provider github"),
            "{err}"
        );

        let mut s = settings("https://x");
        s.repository = None;
        let err = owner_repo(&s, "github").expect_err("no repo").to_string();
        assert!(
            err.starts_with("status.repository is required for provider github"),
            "{err}"
        );

        s.repository = Some("just-a-name".into());
        let err = owner_repo(&s, "gitea").expect_err("bad repo").to_string();
        assert!(err.contains("owner/name"), "{err}");
        s.repository = Some("a/b/c".into());
        assert!(owner_repo(&s, "gitea").is_err());
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        let mut s = settings("https://x");
        s.ca_file = Some(path);
        let err = Forge::new(&s, "github", None)
            .expect_err("bad ca")
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }

    /// A self-signed CA (P-256, valid until 2126), public test data only.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBhjCCAS2gAwIBAgIUaBHmQcCdh+hTzm0dXVYgTtuTtAwwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNaG9pc3QgdGVzdCBDQTAgFw0yNjExMjgwNzM2NTFaGA8yMTI2
MTEwNDA3MzY1MVowGDEWMBQGA1UEAwwNaG9pc3QgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABKNsEIKP3ru41aDOxyDswDvJuSFcbCiF16qZFNyvQ3ur
4af647PFNIoXXYrFi8q35ydDvJ4/g7rCM1e0ceJRFiOjUzBRMB0GA1UdDgQWBBTl
y2ovX+A5o3fHBzZt3BsiodhcVDAfBgNVHSMEGDAWgBTly2ovX+A5o3fHBzZt3Bsi
odhcVDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIHk4/nFzhw14
JiqUi8QoVNS9ti5wQt7K7Xq/b8PVwIuHAiA+NbkNqqdpWr/nFmLx8zu5+3ytJh3i
qn3AGHEuuHlKmg==
-----END CERTIFICATE-----
";

    #[test]
    fn a_pem_ca_file_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, TEST_CA).expect("write");
        let mut s = settings("https://forge.internal");
        s.ca_file = Some(path);
        Forge::new(&s, "gitea", None).expect("a valid CA bundle builds a client");
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_retry_after("99999", now),
            Some(MAX_RETRY_AFTER),
            "capped"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn classification_follows_the_spec() {
        let now = SystemTime::now();
        let empty = HeaderMap::new();
        for code in [500, 502, 503, 408, 429] {
            let e = classify(
                StatusCode::from_u16(code).expect("code"),
                &empty,
                "",
                "x",
                now,
            );
            assert!(e.is_transient(), "{code} should be retried");
        }
        for code in [401, 403, 404, 405] {
            let e = classify(
                StatusCode::from_u16(code).expect("code"),
                &empty,
                "",
                "x",
                now,
            );
            assert!(
                matches!(e, PostError::Config { .. }),
                "{code}: the forge refuses hoist itself: {e:?}"
            );
        }
        for code in [400, 409, 422] {
            let e = classify(
                StatusCode::from_u16(code).expect("code"),
                &empty,
                "",
                "x",
                now,
            );
            assert!(
                matches!(e, PostError::Permanent { .. }),
                "{code}: the forge refuses the status: {e:?}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, "", "x", now),
            PostError::Transient {
                message: "x answered 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert!(classify(StatusCode::FORBIDDEN, &h, "", "x", now).is_transient());
    }

    #[test]
    fn each_forges_rate_limit_reset_is_a_wait_on_the_forges_clock() {
        // The forge's `Date`: 2027-01-15T08:00:00Z, whatever this machine says.
        let date = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let wait = |headers: &[(&'static str, &str)], code: u16| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, HeaderValue::from_str(v).expect("value"));
            }
            match classify(StatusCode::from_u16(code).expect("code"), &h, "", "x", date) {
                PostError::Transient { retry_after, .. } => retry_after,
                other => panic!("{headers:?}: {other:?}"),
            }
        };
        // GitHub's primary limit: remaining 0, reset in Unix seconds.
        assert_eq!(
            wait(
                &[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1800002700")
                ],
                403
            ),
            Some(Duration::from_secs(2700)),
            "45 minutes: honoured, not cut to a quarter of an hour"
        );
        // GitHub's secondary limit: Retry-After wins over the reset.
        assert_eq!(
            wait(
                &[("retry-after", "120"), ("x-ratelimit-reset", "1800002700")],
                403
            ),
            Some(Duration::from_secs(120))
        );
        // GitLab: RateLimit-Reset in Unix seconds, or RateLimit-ResetTime.
        assert_eq!(
            wait(
                &[
                    ("ratelimit-remaining", "0"),
                    ("ratelimit-reset", "1800000060")
                ],
                429
            ),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wait(
                &[("ratelimit-resettime", "Fri, 15 Jan 2027 08:30:00 GMT")],
                429
            ),
            Some(Duration::from_secs(1800))
        );
        // A reset as seconds from now (the IETF draft's form), a Gitea proxy's.
        assert_eq!(
            wait(&[("x-ratelimit-reset", "75")], 429),
            Some(Duration::from_secs(75))
        );
        // A reset already past: try at once.
        assert_eq!(
            wait(&[("x-ratelimit-reset", "1799999000")], 429),
            Some(Duration::ZERO)
        );
        // Nothing said: the reporter's own backoff.
        assert_eq!(wait(&[], 503), None);
        // A garbled day-long wait is capped at a day, then asked again.
        assert_eq!(
            wait(&[("retry-after", "99999999")], 429),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn forge_timestamps_parse_with_and_without_offsets() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // 2027-01-15T08:00:00Z
        assert_eq!(parse_rfc3339("2027-01-15T08:00:00Z"), Some(t));
        assert_eq!(
            parse_rfc3339("2027-01-15T08:00:00.123Z"),
            Some(t + Duration::from_millis(123))
        );
        assert_eq!(parse_rfc3339("2027-01-15T10:00:00+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2027-01-15T03:30:00-04:30"), Some(t));
        assert_eq!(
            parse_rfc3339("2027-01-15T08:00:00.000000001z"),
            Some(t + Duration::from_nanos(1))
        );
        for bad in [
            "",
            "2027-01-15",
            "2027-01-15T08:00:00",
            "2027-13-15T08:00:00Z",
            "2027-01-15T08:00:00+0200",
            "2027-01-15T08:00:00.Z",
            "2027-01-15X08:00:00Z",
            "1969-12-31T23:59:59Z",
            "２027-01-15T08:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // What this module writes, it reads.
        let now = SystemTime::now();
        let written = humantime::format_rfc3339_millis(now).to_string();
        let back = parse_rfc3339(&written).expect("own format");
        assert!(now.duration_since(back).unwrap_or_default() < Duration::from_millis(1));
    }

    #[test]
    fn link_headers_name_the_next_page() {
        let v = r#"<https://api.github.com/repositories/1/commits/x/statuses?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/commits/x/statuses?per_page=100&page=3>; rel="last""#;
        assert_eq!(
            link_rel(v, "next").as_deref(),
            Some("https://api.github.com/repositories/1/commits/x/statuses?per_page=100&page=2")
        );
        assert_eq!(
            link_rel(v, "last").as_deref(),
            Some("https://api.github.com/repositories/1/commits/x/statuses?per_page=100&page=3")
        );
        assert_eq!(link_rel(v, "prev"), None);
        assert_eq!(
            link_rel(r#"<https://x/a?b=1,2>;rel=next"#, "next").as_deref(),
            Some("https://x/a?b=1,2")
        );
        assert_eq!(
            link_rel(
                r#"<https://x/1>; rel="prev first", <https://x/3>; rel="next""#,
                "first"
            )
            .as_deref(),
            Some("https://x/1")
        );
        assert_eq!(link_rel("garbage", "next"), None);
        assert_eq!(link_rel("<unterminated; rel=next", "next"), None);
    }

    #[test]
    fn next_links_must_stay_under_the_api_url() {
        let f =
            Forge::new(&settings("https://ghe.example.com/api/v3"), "github", None).expect("valid");
        let mut h = HeaderMap::new();
        let mut check = |link: &str| {
            h.insert(
                "link",
                HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")).expect("header"),
            );
            f.next_link(&h)
        };
        assert_eq!(
            check("https://ghe.example.com/api/v3/repos/a/b/commits/c/statuses?page=2")
                .expect("same place")
                .as_deref(),
            Some("https://ghe.example.com/api/v3/repos/a/b/commits/c/statuses?page=2")
        );
        for away in [
            "https://evil.example.com/api/v3/x",
            "http://ghe.example.com/api/v3/x",
            "https://ghe.example.com:444/api/v3/x",
            "https://ghe.example.com/other/x",
            "https://user:pw@ghe.example.com/api/v3/x",
        ] {
            assert!(check(away).is_err(), "{away}");
        }
    }

    #[test]
    fn excerpts_are_short_single_line_and_token_free() {
        let body = format!("bad token {}\n{}", "s3cr3t", "x".repeat(500));
        let e = excerpt(&body, "s3cr3t");
        assert!(!e.contains("s3cr3t"));
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= EXCERPT_CHARS + 1);
    }

    #[test]
    fn forge_debug_hides_the_token() {
        let mut s = settings("https://x");
        s.token = Some("ghp_topsecret".into());
        let f = Forge::new(&s, "github", None).expect("valid");
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
    }
}
