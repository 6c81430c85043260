//! Host config and app manifests: parsing, validation, and errors that name
//! the file and line.
//!
//! Everything a user writes by hand enters hoist here, so this module is where
//! typos must be caught: unknown keys are rejected by serde, and values are
//! checked by small newtypes (`Dur`, `AppName`, `ReleaseName`, `Sha256`, ...)
//! during deserialization, so that serde reports the line of the bad value.
//! Checks made after parsing, and keys written twice, are located by
//! `locate`, which asks the YAML parser rather than searching the text.

mod commit;
mod host;
mod inventory;
mod locate;
mod manifest;
mod types;

pub use commit::{
    CommitConfig, DiskTree, Entry, EntryKind, Inventories, RepoTree, load_manifests_from_dir,
    read_beneath, read_commit_config, read_inventories,
};
pub use host::{
    DEFAULT_CONFIG_PATH, DEFAULT_CONTEXT, HostConfig, LimitsConfig, Pm2Config, Preflight,
    ProviderName, RepoConfig, S3Config, StatusConfig, StorageConfig,
};
pub use inventory::{
    FLEET_DIR, Inventory, InventoryHost, KeyKind, check_labels_given, hosts_without_labels,
    inventory_path, parse_inventory, recipient_kind,
};
pub use manifest::{
    AppSet, Artifact, Health, Hooks, Manifest, Rollout, SecretFile, Targets, Wave, parse_manifest,
    validate_app_set,
};
pub use types::{
    AppName, ByteSize, Dur, EnvName, ReleaseName, Sha256, SharedPath, check_host_glob, glob_match,
};

pub(crate) use locate::{Seg, line_of as line_of_key, path as key_path};
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

    /// An error found after parsing, located at the key `path` names.
    pub(crate) fn at(file: &Path, text: &str, path: &[Seg], message: impl Into<String>) -> Self {
        ConfigError::new(file, locate::line_of(text, path), message)
    }
}

/// Parses one YAML file into `T`: a key written twice is refused first (at
/// its second line), then serde reports unknown keys, wrong types and bad
/// values at their own line.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    if let Some(d) = locate::find_duplicate(text) {
        let first = d
            .first_line
            .map(|l| format!(" (first at line {l})"))
            .unwrap_or_default();
        return Err(ConfigError::new(
            file,
            Some(d.line),
            format!("{} is written twice{first}", d.key),
        ));
    }
    serde_norway::from_str(text).map_err(|e| ConfigError::from_yaml(file, &e))
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
