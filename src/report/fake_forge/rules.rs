//! What a forge's commit-status endpoint accepts, and how it refuses the
//! rest: the strict half of both fake forges, the library's
//! ([`super`], test-only) and the end-to-end tests' (tests/common/forge.rs,
//! which includes this file by path). It refers to nothing else in the
//! crate, so it compiles in both.
//!
//! A request is refused for another path or method, a missing or wrong
//! token in that forge's header, (GitHub) a missing `Accept` or
//! `User-Agent`, a body that is not a JSON object, unknown or missing
//! fields, states the forge does not know, descriptions over 140
//! characters, an invalid `target_url`, and an unencoded GitLab project
//! path. Reads (`GET .../commits/{sha}/statuses`) are checked the same way
//! for path, token and headers; their query may hold only the forge's own
//! paging parameters, with numbers: stricter than the real forges, which
//! ignore what they do not know, so that a misspelt parameter in hoist's
//! reader fails a test instead of silently reading the default page size.

use axum::http::{HeaderMap, Method, Uri};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Github,
    Gitea,
    Gitlab,
}

/// The repository every fake serves, as `status.repository` names it.
pub const REPOSITORY: &str = "acme/deploy";

/// A refusal: the HTTP status and the forge's message.
pub type Refusal = (u16, String);

pub fn refuse(code: u16, message: &str) -> Refusal {
    (code, message.to_string())
}

/// GitLab's answer to a status posted again in the state it already has.
pub fn cannot_transition(state: &str) -> Refusal {
    refuse(
        400,
        &format!("Cannot transition status via :{state} from :{state}"),
    )
}

/// A status the forge would take, as the forge names things.
#[derive(Clone, Debug)]
pub struct Posted {
    pub sha: String,
    /// `failed` on GitLab.
    pub state: String,
    /// `context`, or GitLab's `name`.
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

/// The token a request presents, in `flavor`'s auth header.
pub fn presented_token(flavor: Flavor, headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match flavor {
        Flavor::Github => header("authorization")?.strip_prefix("Bearer "),
        Flavor::Gitea => header("authorization")?.strip_prefix("token "),
        Flavor::Gitlab => header("private-token"),
    }
    .map(str::to_string)
}

/// The path of `flavor`'s list of a commit's statuses, without the sha.
fn read_prefix(flavor: Flavor) -> String {
    match flavor {
        Flavor::Github => format!("/repos/{REPOSITORY}/commits/"),
        Flavor::Gitea => format!("/api/v1/repos/{REPOSITORY}/commits/"),
        Flavor::Gitlab => format!(
            "/api/v4/projects/{}/repository/commits/",
            REPOSITORY.replace('/', "%2F")
        ),
    }
}

/// Whether a request is a read of a commit's statuses (else a post).
pub fn is_read(flavor: Flavor, uri: &Uri) -> bool {
    uri.path()
        .strip_prefix(&read_prefix(flavor))
        .is_some_and(|rest| rest.ends_with("/statuses"))
}

/// A valid read: which commit, which page, how many a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadQuery {
    pub sha: String,
    /// 1-based.
    pub page: u64,
    /// As asked (`per_page`, Gitea's `limit`); the forge caps it.
    pub per_page: Option<u64>,
    /// GitLab's `all=true`: every status, not only the latest per name.
    pub all: bool,
    pub if_none_match: Option<String>,
}

/// Checks one read as `flavor` would, with `token` the only one valid.
pub fn validate_read(
    flavor: Flavor,
    token: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<ReadQuery, Refusal> {
    let sha = uri
        .path()
        .strip_prefix(&read_prefix(flavor))
        .and_then(|rest| rest.strip_suffix("/statuses"))
        .filter(|sha| sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| refuse(404, "Not Found"))?;
    if method != Method::GET {
        return Err(refuse(405, "Method Not Allowed"));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if presented_token(flavor, headers).as_deref() != Some(token) {
        return Err(refuse(401, "Bad credentials"));
    }
    if flavor == Flavor::Github {
        if header("accept") != Some("application/vnd.github+json") {
            return Err(refuse(415, "Unsupported 'Accept' header"));
        }
        if !header("user-agent").is_some_and(|ua| ua.starts_with("hoist/")) {
            return Err(refuse(403, "Request forbidden by administrative rules"));
        }
    }
    let size_key = match flavor {
        Flavor::Github | Flavor::Gitlab => "per_page",
        Flavor::Gitea => "limit",
    };
    let mut q = ReadQuery {
        sha: sha.to_string(),
        page: 1,
        per_page: None,
        all: false,
        if_none_match: header("if-none-match").map(str::to_string),
    };
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| refuse(400, &format!("{key} must be a number")))
        };
        match key {
            "page" => q.page = number()?.max(1),
            k if k == size_key => q.per_page = Some(number()?),
            "all" if flavor == Flavor::Gitlab => q.all = value == "true",
            _ => return Err(refuse(400, &format!("unknown query parameter {key}"))),
        }
    }
    Ok(q)
}

/// Checks one request as `flavor` would, with `token` the only one valid.
pub fn validate(
    flavor: Flavor,
    token: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Posted, Refusal> {
    let prefix = match flavor {
        Flavor::Github => format!("/repos/{REPOSITORY}/statuses/"),
        Flavor::Gitea => format!("/api/v1/repos/{REPOSITORY}/statuses/"),
        Flavor::Gitlab => format!(
            "/api/v4/projects/{}/statuses/",
            REPOSITORY.replace('/', "%2F")
        ),
    };
    // The raw path: GitLab's project must arrive percent-encoded.
    let sha = uri
        .path()
        .strip_prefix(&prefix)
        .filter(|sha| sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| refuse(404, "Not Found"))?;
    if uri.query().is_some() {
        return Err(refuse(404, "Not Found"));
    }
    if method != Method::POST {
        return Err(refuse(405, "Method Not Allowed"));
    }

    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorized = match flavor {
        Flavor::Github => header("authorization") == Some(&format!("Bearer {token}")),
        Flavor::Gitea => header("authorization") == Some(&format!("token {token}")),
        Flavor::Gitlab => header("private-token") == Some(token),
    };
    if !authorized {
        return Err(refuse(401, "Bad credentials"));
    }
    if flavor == Flavor::Github {
        if header("accept") != Some("application/vnd.github+json") {
            return Err(refuse(415, "Unsupported 'Accept' header"));
        }
        if !header("user-agent").is_some_and(|ua| ua.starts_with("hoist/")) {
            return Err(refuse(403, "Request forbidden by administrative rules"));
        }
    }
    if !header("content-type").is_some_and(|ct| ct.starts_with("application/json")) {
        return Err(refuse(415, "Unsupported Media Type"));
    }

    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| refuse(400, "Problems parsing JSON"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| refuse(400, "Body should be a JSON object"))?;
    let (context_key, states): (&str, &[&str]) = match flavor {
        Flavor::Github => ("context", &["pending", "success", "failure", "error"]),
        Flavor::Gitea => (
            "context",
            &["pending", "success", "failure", "error", "warning"],
        ),
        Flavor::Gitlab => (
            "name",
            &[
                "pending", "running", "success", "failed", "canceled", "skipped",
            ],
        ),
    };
    for key in obj.keys() {
        if ![context_key, "state", "description", "target_url"].contains(&key.as_str()) {
            return Err(refuse(422, &format!("unknown field {key}")));
        }
    }
    let string = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let state = string("state")
        .filter(|s| states.contains(&s.as_str()))
        .ok_or_else(|| refuse(422, "state is missing or invalid"))?;
    let context = string(context_key)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse(422, &format!("{context_key} is missing")))?;
    let description = string("description").ok_or_else(|| refuse(422, "description is missing"))?;
    if description.chars().count() > 140 {
        return Err(refuse(
            422,
            "description is too long (maximum is 140 characters)",
        ));
    }
    let target_url = match obj.get("target_url") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .map(str::to_string)
                .ok_or_else(|| refuse(422, "target_url is invalid"))?,
        ),
    };
    Ok(Posted {
        sha: sha.to_string(),
        state,
        context,
        description,
        target_url,
    })
}
