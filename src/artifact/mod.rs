//! The artifact stage: turns a manifest's `artifact.url` + `sha256` into a
//! release directory on disk.
//!
//! It is split by the order things happen to an artifact, each file owning
//! one step and handing the next a plain path:
//!
//! - `fetch`: download into a content-addressed cache (`<state_dir>/cache/<sha256>`),
//!   hashing while streaming, so a release already on disk is never downloaded again;
//! - `verify`: the pure checks (hashes, release-relative paths, where a symlink leads)
//!   shared by `unpack` and `pack`;
//! - `unpack`: a hostile-archive-proof extraction into a fresh staging directory;
//! - (the reproducible `.tar.zst` that `unpack` is designed for is written by
//!   `producer::pack`, which shares `verify`).
//!
//! Nothing here knows about apps, manifests or the `releases/` layout; that is
//! the `release` stage's business. Errors say whether trying again later could
//! help ([`ArtifactError::is_transient`]) because the caller turns the others
//! into a commit status of `error`.

mod fetch;
mod unpack;
pub(crate) mod verify;

/// The hand-written tar builder the end-to-end tests use too.
#[cfg(test)]
#[path = "../../tests/common/raw_tar.rs"]
mod raw_tar;

pub(crate) use fetch::s3_store;
pub use fetch::{Cache, FetchSettings, S3Settings, Watch, Watcher, fetch_small};
pub use unpack::{UnpackLimits, UnpackStats, unpack};

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong between an artifact URL and a release
/// directory. Each message is one sentence naming the URL (without
/// credentials), archive entry or path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The URL cannot or may not be fetched: unknown scheme, malformed, or
    /// plain http while `allow_http` is false.
    #[error("artifact URL {url} is refused: {reason}")]
    BadUrl { url: String, reason: String },

    /// The manifest's sha256 is not 64 hex digits.
    #[error("the artifact sha256 {value:?} is not 64 hexadecimal digits")]
    BadSha256 { value: String },

    /// This server's settings do not allow fetching the URL (no S3 settings,
    /// an unreadable CA file, half a set of credentials).
    #[error("cannot fetch {url}: {reason}")]
    Settings { url: String, reason: String },

    /// HTTP 404/410, a missing S3 object, a missing file.
    #[error("{url} does not exist")]
    NotFound { url: String },

    /// HTTP 401/403, S3 access denied, a file we may not read.
    #[error("access to {url} was denied: {detail}")]
    AccessDenied { url: String, detail: String },

    /// Any other unsuccessful HTTP status.
    #[error("fetching {url} failed with HTTP status {status}")]
    HttpStatus { url: String, status: u16 },

    /// Connection refused or reset, DNS, TLS, timeouts, a broken body.
    #[error("fetching {url} failed: {detail}")]
    Network { url: String, detail: String },

    /// The body ended before the announced length.
    #[error("the download of {url} stopped after {received} of {expected} bytes")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },

    /// The downloaded bytes are not the ones the manifest names.
    // What differs first and the URL last: a status description cut at
    // 140 characters keeps the part that matters.
    #[error(
        "checksum mismatch: the artifact's sha256 is {actual}, the manifest expects {expected} ({url})"
    )]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    /// Neither zstd nor gzip magic bytes.
    #[error("the artifact is neither a .tar.zst nor a .tar.gz archive ({detail})")]
    UnsupportedFormat { detail: String },

    /// The compressed stream or the tar structure is damaged or cut short.
    #[error("the archive is corrupt or truncated: {detail}")]
    CorruptArchive { detail: String },

    /// An entry that could write outside the release, or is of a type a
    /// release may not hold.
    #[error("the archive entry {entry:?} is refused: {reason}")]
    UnsafeEntry { entry: String, reason: String },

    /// More bytes or entries than the unpack limits allow.
    #[error("the archive is too large: {detail}")]
    TooLarge { detail: String },

    /// `storage.trusted_keys` is set and the artifact's minisign signature
    /// is missing, unreadable, or not by a trusted key.
    #[error("the artifact at {url} is refused: its signature {reason}")]
    Signature { url: String, reason: String },

    /// `pack` met something a release may not contain.
    #[error("cannot pack {}: {reason}", path.display())]
    Unpackable { path: PathBuf, reason: String },

    /// A local file system operation failed (disk full, permissions, ...).
    #[error("{context}: {error}")]
    Io { context: String, error: io::Error },
}

impl ArtifactError {
    /// true for faults worth retrying on a later poll (network, 5xx, timeouts,
    /// truncated body, disk full and other local I/O trouble); false when the
    /// artifact itself (or its URL) is wrong, so the commit gets status `error`.
    pub fn is_transient(&self) -> bool {
        match self {
            ArtifactError::Network { .. }
            | ArtifactError::Truncated { .. }
            | ArtifactError::Io { .. } => true,
            ArtifactError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            ArtifactError::BadUrl { .. }
            | ArtifactError::BadSha256 { .. }
            | ArtifactError::Settings { .. }
            | ArtifactError::NotFound { .. }
            | ArtifactError::AccessDenied { .. }
            | ArtifactError::ChecksumMismatch { .. }
            | ArtifactError::UnsupportedFormat { .. }
            | ArtifactError::CorruptArchive { .. }
            | ArtifactError::UnsafeEntry { .. }
            | ArtifactError::TooLarge { .. }
            | ArtifactError::Signature { .. }
            | ArtifactError::Unpackable { .. } => false,
        }
    }

    /// true when the bytes the manifest names are themselves bad (wrong
    /// hash, not an archive, unsafe or oversized content): fetching them
    /// again cannot help, so the commit is not retried for the app until the
    /// branch moves. Refusals a person can fix on the side (credentials, a
    /// missing upload, settings) are tried again at every poll instead.
    pub fn condemns_artifact(&self) -> bool {
        matches!(
            self,
            ArtifactError::ChecksumMismatch { .. }
                | ArtifactError::Signature { .. }
                | ArtifactError::UnsupportedFormat { .. }
                | ArtifactError::CorruptArchive { .. }
                | ArtifactError::UnsafeEntry { .. }
                | ArtifactError::TooLarge { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArtifactError {
        let context = context.into();
        move |error| ArtifactError::Io { context, error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_faults_outside_the_artifact_are_transient() {
        let url = || "https://example.com/a.tar.zst".to_string();
        let status = |status| ArtifactError::HttpStatus { url: url(), status };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(400).is_transient());
        let disk_full = ArtifactError::Io {
            context: "writing".into(),
            error: io::Error::from(io::ErrorKind::StorageFull),
        };
        assert!(disk_full.is_transient());
        let mismatch = ArtifactError::ChecksumMismatch {
            url: url(),
            expected: "a".into(),
            actual: "b".into(),
        };
        assert!(!mismatch.is_transient());
        assert_eq!(
            mismatch.to_string(),
            "checksum mismatch: the artifact's sha256 is b, the manifest expects a (https://example.com/a.tar.zst)"
        );
    }
}
