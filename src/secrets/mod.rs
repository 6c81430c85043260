//! Sealed app secrets (SPEC §7): files encrypted with age in the config
//! repository, opened on the server with its `identity_file`, and kept in
//! plaintext only in `<root>/<app>/secrets/<generation>/`.
//!
//! The module is shaped around who holds what:
//!
//! - `identity`: a server's (or an admin's) private key: an age X25519
//!   identity or an OpenSSH ed25519 key, and `hoist keygen`, which writes one.
//! - `recipients`: whom a file is sealed to, worked out from the inventory
//!   (`fleet/<environment>.yaml`): the hosts an app targets plus `admins`.
//! - `sealed`: the age format itself: sealing to recipients (armored, so a
//!   change is a readable text diff in git), opening with an identity, and
//!   telling an age file from anything else. Every error here says which
//!   file and what fixes it, and none ever carries a byte of plaintext.
//! - `store`: the on-disk plaintext of one app, in generations swapped by a
//!   `live` symlink exactly like `current` swaps releases, so a deploy can
//!   change the pair (release, secrets) as one step and undo it as one.
//! - `repo`: the producer side over a config repo checkout: which files the
//!   manifests name, for which environments, sealed to whom; `edit`, `rekey`
//!   and the `hoist check` rules. `commands` prints what they did, for the
//!   command line.
//!
//! Plaintext travels as [`Plaintext`]: its buffer is wiped when dropped and
//! its `Debug` shows only a length, so it cannot leak through a log line or
//! an error by accident.

pub mod commands;
mod identity;
mod recipients;
pub mod repo;
mod sealed;
mod store;

pub use identity::{Identity, ServerIdentity, keygen};
pub use recipients::{Recipient, RecipientSet, recipient_tag};
pub use sealed::{OpenFailure, is_age_file, open, open_for_server, seal, sealed_recipient_tags};
pub use store::{Generation, Owner, SecretStore, link_into_release};

use age::secrecy::zeroize::Zeroizing;
use std::fmt;
use std::path::PathBuf;

/// The plaintext of a sealed file. Wiped from memory when dropped; never
/// shown by `Debug`.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: Vec<u8>) -> Plaintext {
        Plaintext(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({} bytes)", self.0.len())
    }
}

impl Clone for Plaintext {
    fn clone(&self) -> Self {
        Plaintext::new(self.0.to_vec())
    }
}

/// Everything that can go wrong with sealed secrets. Messages name the file
/// and, where there is one, the fix; none contains plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A sealed file that cannot be opened (`file` is how it is named to
    /// the user: a repo path, or a path on disk).
    #[error("{file} cannot be opened: {why}")]
    Open { file: String, why: OpenFailure },
    /// The server has no `identity_file` but an app has secrets.
    #[error(
        "{file} cannot be opened: the host config sets no identity_file; run `hoist keygen -o /etc/hoist/identity`, set identity_file, add the key it prints to {inventory} and re-seal with `hoist secrets rekey`"
    )]
    NoIdentity { file: String, inventory: String },
    /// The server's `identity_file` is set but cannot be used (not there
    /// yet, unreadable, not a key): only apps with secrets are affected.
    #[error("{file} cannot be opened: identity_file {} {why}", path.display())]
    IdentityUnusable {
        file: String,
        path: PathBuf,
        why: String,
    },
    /// An identity file that cannot be read or used.
    #[error("{}: {reason}", path.display())]
    Identity { path: PathBuf, reason: String },
    /// A file or directory operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file-system step through handles failed (it names the path).
    #[error(transparent)]
    Fs(#[from] crate::safe_fs::Error),
    /// A config file (inventory, manifest) is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// Sealing failed or has nobody to seal to.
    #[error("{0}")]
    Seal(String),
    /// `hoist secrets edit` stopped before writing (the editor failed).
    #[error("{0}")]
    Edit(String),
    /// A request that cannot be carried out as asked (wrong arguments, a
    /// file no manifest names, ...).
    #[error("{0}")]
    Usage(String),
}

impl SecretsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> SecretsError {
        let path = path.into();
        move |source| SecretsError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_debug_shows_only_its_length() {
        let p = Plaintext::new(b"DB_PASSWORD=hunter2".to_vec());
        let shown = format!("{p:?}");
        assert_eq!(shown, "Plaintext(19 bytes)");
        assert!(!shown.contains("hunter2"));
    }
}
