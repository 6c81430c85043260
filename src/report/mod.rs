//! Commit statuses: telling the forge what happened to each commit (SPEC §4).
//!
//! This module owns the *values* every forge shares (a [`Status`], its
//! [`State`], the context template and the 140-character description rule)
//! and the one seam between hoist and a forge, the [`Provider`] trait. Each
//! forge speaks its own dialect in its own file (`github.rs`, `gitea.rs`,
//! `gitlab.rs`, `file.rs`); `forge.rs` holds the HTTP plumbing they share
//! (client, URL checks, how an answer maps to "done / retry / give up").
//!
//! The seam has two verbs. [`Provider::post`] tells the forge about a
//! commit; [`Provider::statuses`] reads back what every server told it, which
//! is how fleet rollouts (SPEC §8) and `hoist fleet` see the environment
//! without any server talking to another. A read is conditional (the last
//! `ETag` goes back as `If-None-Match`, so an unchanged answer is a `304`
//! that GitHub does not count against its rate limit), follows each forge's
//! pagination, keeps the latest status of each context, and carries the
//! forge's `Date`: every time a rollout compares is the forge's, never a
//! server's own clock.
//!
//! Deploys must never wait on a forge, so nothing here is called inline by the
//! pipeline: the pipeline hands statuses to a [`Reporter`] (`reporter.rs`),
//! which writes them to the outbox in `state_dir` (`outbox.rs`) and posts
//! them from a background task that retries for as long as it takes,
//! honours `Retry-After` and rate-limit resets, lets a newer status
//! supersede an older one and never posts the same state twice.
//!
//! Secrets: a provider holds the forge token, so every type that holds one
//! implements `Debug` by hand, and every error message is built from values
//! that cannot contain it (URLs are refused when they carry credentials, and
//! forge answers are scrubbed of the token before they are quoted).

mod file;
mod forge;
mod gitea;
mod github;
mod gitlab;
pub mod outbox;
mod reporter;

#[cfg(test)]
pub(crate) mod fake_forge;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

pub use crate::status::{
    MAX_DESCRIPTION_CHARS, ReadStatus, State, Status, StatusRead, latest_per_context,
    render_context, truncate_description,
};
pub use reporter::Reporter;

/// Which forge (or sink) statuses go to: the `status.provider` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    Github,
    Gitea,
    Gitlab,
    File,
    None,
}

impl ProviderKind {
    /// The name used in the config file and in messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Github => "github",
            ProviderKind::Gitea => "gitea",
            ProviderKind::Gitlab => "gitlab",
            ProviderKind::File => "file",
            ProviderKind::None => "none",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a provider needs, already resolved by the config layer (the
/// token has been read from `status.token_file`).
///
/// `Debug` is written by hand so that the token never shows.
#[derive(Clone)]
pub struct ProviderSettings {
    pub kind: ProviderKind,
    /// github: defaults to `https://api.github.com`; gitea/gitlab: required.
    pub api_url: Option<String>,
    /// `owner/name`; GitLab: numeric project id or `group/project`.
    pub repository: Option<String>,
    /// The forge token (contents of `status.token_file`).
    pub token: Option<String>,
    /// provider `file`: the JSON-lines file to append to.
    pub path: Option<PathBuf>,
    /// Plain `http://` api_url is refused unless true.
    pub allow_http: bool,
    /// Extra PEM CA certificates trusted for https.
    pub ca_file: Option<PathBuf>,
    /// Optional link shown next to the status.
    pub target_url: Option<String>,
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("kind", &self.kind)
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("path", &self.path)
            .field("allow_http", &self.allow_http)
            .field("ca_file", &self.ca_file)
            .field("target_url", &self.target_url)
            .finish()
    }
}

#[cfg(test)]
impl ProviderSettings {
    /// What the forge tests start from: `kind` for `acme/deploy` with a
    /// token, https only, every other key unset.
    pub(crate) fn for_test(kind: ProviderKind) -> ProviderSettings {
        ProviderSettings {
            kind,
            api_url: None,
            repository: Some("acme/deploy".into()),
            token: Some("t".into()),
            path: None,
            allow_http: false,
            ca_file: None,
            target_url: None,
        }
    }
}

/// A problem with the `status:` settings, found when the provider is built.
/// Each message is one sentence naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A key is missing or holds a value hoist cannot use.
    #[error("{0}")]
    Config(String),
    /// `ca_file` could not be read or holds no usable certificate.
    #[error("cannot use ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the HTTPS client for provider {provider}: {source}")]
    Client {
        provider: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

/// Why one attempt to post a status did not succeed, and what to do next.
///
/// Messages never contain the token: providers build them from the redacted
/// URL, the HTTP status and a scrubbed excerpt of the forge's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// Worth trying again (network, 5xx, 408, 429, rate limits), after
    /// `retry_after` when the forge said so.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The forge refuses hoist itself (a bad token, an unknown repository,
    /// a wrong `api_url`): no status can be posted until the `status:`
    /// settings are fixed, so statuses wait.
    #[error("{message}")]
    Config { message: String },
    /// The forge refuses this status for what it says (a 422, a sha that is
    /// not a commit id): trying again cannot help, so it is dropped.
    #[error("{message}")]
    Permanent { message: String },
}

impl PostError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PostError::Transient { .. })
    }
}

/// Why reading a commit's statuses did not succeed. Like [`PostError`], the
/// message is one sentence naming the URL (never the token), and says
/// whether asking again later could help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Network, 5xx, rate limits, an answer cut short: ask again later
    /// (after `retry_after` when the forge said so).
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Bad token, unknown repository, no statuses to read (`provider:
    /// none`): asking again cannot help until the config changes.
    #[error("{message}")]
    Permanent { message: String },
}

impl ReadError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadError::Transient { .. })
    }

    pub(crate) fn transient(message: String) -> ReadError {
        ReadError::Transient {
            message,
            retry_after: None,
        }
    }
}

impl From<PostError> for ReadError {
    fn from(e: PostError) -> ReadError {
        match e {
            PostError::Transient {
                message,
                retry_after,
            } => ReadError::Transient {
                message,
                retry_after,
            },
            PostError::Config { message } | PostError::Permanent { message } => {
                ReadError::Permanent { message }
            }
        }
    }
}

/// The answer to a (conditional) read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The statuses, new or changed since the `ETag` sent.
    Changed(StatusRead),
    /// `304 Not Modified`: nothing changed since the `ETag` sent. `date` is
    /// the forge's clock now, which is still news to a rollout.
    NotModified { date: SystemTime },
}

impl Read {
    /// The forge's clock at the answer.
    pub fn date(&self) -> SystemTime {
        match self {
            Read::Changed(r) => r.date,
            Read::NotModified { date } => *date,
        }
    }
}

/// The seam between hoist and a forge: post one status, once; read back a
/// commit's statuses.
///
/// Retrying, deduplication and ordering of posts are the [`Reporter`]'s
/// job; a provider makes exactly one attempt and says, through
/// [`PostError`] or [`ReadError`], whether another could succeed.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's name, for logs (`github`, `gitea`, …).
    fn name(&self) -> &'static str;

    /// Make one attempt to post `status`.
    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>>;

    /// Read every status of commit `sha` (all pages), keeping the latest
    /// per context. With `etag` (from the last read of the same commit) the
    /// request is conditional, and an unchanged answer is
    /// [`Read::NotModified`].
    fn statuses<'a>(
        &'a self,
        sha: &'a str,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, ReadError>>;
}

/// The status readers on raw input, for the fuzz target
/// (`fuzz/fuzz_targets/status_readers.rs`): one page of each forge's list
/// of statuses and the lines of a `file` provider's path, read at forge
/// time `date`. Each returns the statuses it can read and trust, and how
/// many entries it skipped; a page that is not a JSON list is an error.
#[doc(hidden)]
pub mod fuzzing {
    use super::ReadStatus;
    use std::time::SystemTime;

    pub fn github_page(body: &[u8], date: SystemTime) -> Result<(Vec<ReadStatus>, usize), String> {
        super::github::parse_page(body, date, 0).map_err(|e| e.to_string())
    }

    pub fn gitea_page(body: &[u8], date: SystemTime) -> Result<(Vec<ReadStatus>, usize), String> {
        super::gitea::parse_page(body, date)
            .map(|(s, _, skipped)| (s, skipped))
            .map_err(|e| e.to_string())
    }

    pub fn gitlab_page(body: &[u8], date: SystemTime) -> Result<(Vec<ReadStatus>, usize), String> {
        super::gitlab::parse_page(body, date)
            .map(|(s, _, skipped)| (s, skipped))
            .map_err(|e| e.to_string())
    }

    pub fn file_lines(bytes: &[u8], sha: &str, now: SystemTime) -> (Vec<ReadStatus>, usize) {
        super::file::parse_lines(bytes, sha, now)
    }

    /// The next page a `Link` header value names.
    pub fn next_link(value: &str) -> Option<String> {
        super::forge::link_rel(value, "next")
    }

    /// A `Retry-After` value, read at `now`.
    pub fn retry_after(value: &str, now: SystemTime) -> Option<std::time::Duration> {
        super::forge::parse_retry_after(value, now)
    }
}

/// Build the provider `status:` asks for, checking every key it needs.
pub fn build_provider(s: &ProviderSettings) -> Result<Arc<dyn Provider>, ReportError> {
    Ok(match s.kind {
        ProviderKind::Github => Arc::new(github::Github::new(s)?),
        ProviderKind::Gitea => Arc::new(gitea::Gitea::new(s)?),
        ProviderKind::Gitlab => Arc::new(gitlab::Gitlab::new(s)?),
        ProviderKind::File => Arc::new(file::FileProvider::new(s)?),
        ProviderKind::None => Arc::new(NoneProvider),
    })
}

/// `provider: none`: statuses are accepted and dropped.
#[derive(Debug)]
struct NoneProvider;

impl Provider for NoneProvider {
    fn name(&self) -> &'static str {
        "none"
    }

    fn post<'a>(&'a self, _status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async { Ok(()) })
    }

    fn statuses<'a>(
        &'a self,
        _sha: &'a str,
        _etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, ReadError>> {
        Box::pin(async {
            Err(ReadError::Permanent {
                message: "status.provider none keeps no statuses to read back; rollouts and hoist fleet need github, gitea, gitlab or file".into(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_debug_hides_the_token() {
        let s = ProviderSettings {
            token: Some("ghp_supersecret".into()),
            ..ProviderSettings::for_test(ProviderKind::Github)
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn none_provider_accepts_everything() {
        let s = ProviderSettings {
            kind: ProviderKind::None,
            api_url: None,
            repository: None,
            token: None,
            path: None,
            allow_http: false,
            ca_file: None,
            target_url: None,
        };
        let p = build_provider(&s).expect("none needs nothing");
        assert_eq!(p.name(), "none");
    }

    #[tokio::test]
    async fn none_provider_has_nothing_to_read() {
        let s = ProviderSettings {
            kind: ProviderKind::None,
            repository: None,
            token: None,
            ..ProviderSettings::for_test(ProviderKind::None)
        };
        let p = build_provider(&s).expect("none needs nothing");
        let err = p.statuses(&"a".repeat(40), None).await.expect_err("none");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("provider none"), "{err}");
    }
}
