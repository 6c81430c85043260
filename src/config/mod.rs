//! Host config and app manifests: parsing, validation, and errors that name
//! the file and line.
//!
//! Everything a user writes by hand enters hoist here, so this module is where
//! typos must be caught: unknown keys are rejected by serde, and values are
//! checked by small newtypes (`Dur`, `AppName`, `ReleaseName`, `Sha256`, ...)
//! during deserialization, so that serde reports the line of the bad value.

mod host;
mod inventory;
mod manifest;
mod types;

pub use host::{
    DEFAULT_CONFIG_PATH, HostConfig, LimitsConfig, Pm2Config, ProviderName, RepoConfig, S3Config,
    StatusConfig, StorageConfig,
};
pub use inventory::{
    FLEET_DIR, Inventory, InventoryHost, KeyKind, inventory_path, parse_inventory, recipient_kind,
};
pub use manifest::{
    AppSet, Artifact, Health, Hooks, Manifest, Rollout, SecretFile, Targets, Wave,
    load_manifests_from_dir, parse_manifest, validate_app_set,
};
pub use types::{AppName, ByteSize, Dur, EnvName, ReleaseName, Sha256, SharedPath, glob_match};

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with a file the user wrote, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    /// Turns a serde_norway error into one that names the file and line, with
    /// the location moved from the end of the message to the front.
    pub fn from_yaml(file: &Path, err: &serde_norway::Error) -> Self {
        let mut message = err.to_string();
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        let line = err.location().map(|l| l.line());
        ConfigError {
            file: file.to_path_buf(),
            line,
            message,
        }
    }

    /// Like `from_yaml`, but for errors raised by our own value checks,
    /// which serde locates at the enclosing mapping: the quoted value in the
    /// message is looked for from that line on, to point at the value itself.
    pub fn from_yaml_in(file: &Path, err: &serde_norway::Error, text: &str) -> Self {
        let mut e = ConfigError::from_yaml(file, err);
        if let (Some(line), Some(value)) = (e.line, quoted_value(&e.message))
            && let Some(i) = text
                .lines()
                .enumerate()
                .skip(line.saturating_sub(1))
                .find(|(_, l)| l.contains(value.as_str()))
                .map(|(i, _)| i)
        {
            e.line = Some(i + 1);
        }
        e
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The first `"..."` in a message, unescaped only for plain values.
fn quoted_value(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let len = message[start..].find('"')?;
    let v = &message[start..start + len];
    (!v.is_empty() && !v.contains('\\')).then(|| v.to_string())
}

/// The 1-based line of the first line in `text` that contains `needle`, for
/// errors found after parsing (cross-field checks) where serde has no location.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}
