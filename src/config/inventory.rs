//! The inventory of one environment (`fleet/<environment>.yaml` in the
//! config repo, SPEC §2): which servers the environment has, their labels,
//! and the public keys app secrets are sealed to.
//!
//! It is read from the same commit as the manifests and validated like one:
//! an invalid inventory makes the whole commit `error`. Keys are parsed here,
//! not when a secret is sealed, so a typo in a key is caught by `hoist check`
//! and by the server before anything is deployed.

use super::{ConfigError, EnvName, Seg, glob_match};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The folder of inventories inside the config repo.
pub const FLEET_DIR: &str = "fleet";

/// `fleet/<environment>.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    #[serde(default)]
    pub hosts: BTreeMap<String, InventoryHost>,
    /// Recipients who can open every sealed file of the environment.
    #[serde(default)]
    pub admins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryHost {
    /// Absent and `null` read as none here; the config checks tell them
    /// from `labels: []` (see [`check_labels_given`]).
    #[serde(default, deserialize_with = "null_as_none")]
    pub labels: Vec<String>,
    /// The host's public key: an age X25519 recipient (`age1...`) or an
    /// OpenSSH ed25519 public key. Only needed for sealed secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn null_as_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The path of an environment's inventory inside the repo.
pub fn inventory_path(environment: &str) -> PathBuf {
    Path::new(FLEET_DIR).join(format!("{environment}.yaml"))
}

/// What kind of key a recipient string is, if it is one hoist accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `age1...`
    Age,
    /// `ssh-ed25519 AAAA...`
    SshEd25519,
    /// `ssh-rsa AAAA...` (admins only: a server's identity is ed25519 or age)
    SshRsa,
}

/// Parses a recipient the way the sealing code will, so that what passes
/// here can be sealed to.
pub fn recipient_kind(key: &str) -> Result<KeyKind, String> {
    let key = key.trim();
    if key.starts_with("age1") {
        return key
            .parse::<age::x25519::Recipient>()
            .map(|_| KeyKind::Age)
            .map_err(|e| format!("is not a valid age recipient ({e})"));
    }
    if key.starts_with("ssh-ed25519 ") || key.starts_with("ssh-rsa ") {
        return match key.parse::<age::ssh::Recipient>() {
            Ok(age::ssh::Recipient::SshEd25519(..)) => Ok(KeyKind::SshEd25519),
            Ok(age::ssh::Recipient::SshRsa(..)) => Ok(KeyKind::SshRsa),
            Err(e) => Err(format!("is not a valid OpenSSH public key ({e:?})")),
        };
    }
    Err("must be an age recipient (age1...) or an OpenSSH public key (ssh-ed25519 ...)".into())
}

impl Inventory {
    /// The labels of `host` when the inventory lists it.
    pub fn labels_of(&self, host: &str) -> Option<&[String]> {
        self.hosts.get(host).map(|h| h.labels.as_slice())
    }

    /// The hosts (names, sorted) whose labels and names a `targets`
    /// selection picks; `None` targets picks every host.
    pub fn hosts_targeted(&self, targets: Option<&super::Targets>) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(name, h)| targets.is_none_or(|t| t.matches(name, &h.labels)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Whether any host name is matched by `glob` (for warnings in check).
    pub fn any_host_matches(&self, glob: &str) -> bool {
        self.hosts.keys().any(|h| glob_match(glob, h))
    }
}

/// Parses and validates one inventory. `file` names it in messages
/// (`fleet/production.yaml`); the environment is its stem.
pub fn parse_inventory(file: &Path, text: &str) -> Result<(EnvName, Inventory), ConfigError> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let env = EnvName::new(stem).map_err(|m| ConfigError::new(file, None, m))?;
    let inv: Inventory = super::parse_yaml(file, text)?;
    let at = |segs: &[Seg], msg: String| ConfigError::at(file, text, segs, msg);
    for (name, h) in &inv.hosts {
        let host = [Seg::Key("hosts"), Seg::Key(name)];
        if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(at(
                &host,
                format!("host name {name:?} must not be empty or contain spaces or '/'"),
            ));
        }
        for (i, l) in h.labels.iter().enumerate() {
            if l.trim().is_empty() {
                let segs = [host[0], host[1], Seg::Key("labels"), Seg::Index(i)];
                return Err(at(&segs, format!("hosts.{name}.labels[{i}] is empty")));
            }
        }
        if let Some(key) = &h.key {
            let segs = [host[0], host[1], Seg::Key("key")];
            match recipient_kind(key) {
                Ok(KeyKind::Age) | Ok(KeyKind::SshEd25519) => {}
                Ok(KeyKind::SshRsa) => {
                    return Err(at(
                        &segs,
                        format!(
                            "hosts.{name}.key is an ssh-rsa key; a server's key must be age (age1...) or ssh-ed25519 (hoist keygen writes one)"
                        ),
                    ));
                }
                Err(why) => return Err(at(&segs, format!("hosts.{name}.key {why}"))),
            }
        }
    }
    for (i, a) in inv.admins.iter().enumerate() {
        if let Err(why) = recipient_kind(a) {
            return Err(at(
                &[Seg::Key("admins"), Seg::Index(i)],
                format!("admins[{i}] {why}"),
            ));
        }
    }
    Ok((env, inv))
}

/// The hosts of an inventory whose `labels` is absent or null (not
/// `labels: []`, which says "no labels" on purpose), in file order. The
/// parsed [`Inventory`] cannot tell the two apart; the text can.
pub fn hosts_without_labels(text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        hosts: BTreeMap<String, Option<RawHost>>,
    }
    #[derive(Deserialize)]
    struct RawHost {
        #[serde(default)]
        labels: Option<serde_norway::Value>,
    }
    let Ok(raw) = serde_norway::from_str::<Raw>(text) else {
        return Vec::new();
    };
    raw.hosts
        .into_iter()
        .filter(|(_, h)| h.as_ref().is_none_or(|h| h.labels.is_none()))
        .map(|(name, _)| name)
        .collect()
}

/// The rule for labels: while any manifest targets labels (`targets.labels`
/// or a wave's `labels`), an inventory entry without `labels` would drop
/// that server out of those apps (adding a key would remove an app), so it
/// is an error naming the entry and an app that targets labels.
pub fn check_labels_given(
    file: &Path,
    text: &str,
    apps: &super::AppSet,
) -> Result<(), ConfigError> {
    let targeting = apps.iter().find_map(|(app, m)| {
        let mut labels: Vec<&str> = m
            .targets
            .iter()
            .flat_map(|t| t.labels.iter().map(String::as_str))
            .collect();
        if let Some(r) = &m.rollout {
            labels.extend(
                r.waves
                    .iter()
                    .flat_map(|w| w.labels.iter().map(String::as_str)),
            );
        }
        labels.dedup();
        (!labels.is_empty()).then(|| (app.to_string(), labels.join(", ")))
    });
    let Some((app, labels)) = targeting else {
        return Ok(());
    };
    match hosts_without_labels(text).first() {
        None => Ok(()),
        Some(host) => Err(ConfigError::at(
            file,
            text,
            &[Seg::Key("hosts"), Seg::Key(host)],
            format!(
                "{host} has no labels; {app} targets [{labels}]: give it its labels (write `labels: []` for none), or it would drop out of every app that targets labels"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn parse(text: &str) -> Result<Inventory, ConfigError> {
        parse_inventory(Path::new("fleet/production.yaml"), text).map(|(_, i)| i)
    }

    #[test]
    fn spec_example_parses() {
        let inv = parse(&format!(
            "hosts:\n  web-1: {{ labels: [web, canary], key: \"{AGE}\" }}\n  web-2: {{ labels: [web] }}\nadmins:\n  - \"{AGE}\"\n"
        ))
        .unwrap();
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(
            inv.labels_of("web-1").unwrap(),
            &["web".to_string(), "canary".to_string()]
        );
        assert_eq!(inv.labels_of("db-1"), None);
        let t = super::super::Targets {
            hosts: vec![],
            labels: vec!["canary".into()],
        };
        assert_eq!(inv.hosts_targeted(Some(&t)), vec!["web-1"]);
        assert_eq!(inv.hosts_targeted(None), vec!["web-1", "web-2"]);
    }

    #[test]
    fn bad_keys_and_unknown_fields_are_refused() {
        let e = parse("hosts:\n  web-1: { key: \"age1nope\" }\n").unwrap_err();
        assert!(e.message.contains("hosts.web-1.key"), "{e}");
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("hosts:\n  web-1: { lables: [x] }\n").unwrap_err();
        assert!(e.message.contains("lables"), "{e}");
        let e = parse("admins: [\"hello\"]\n").unwrap_err();
        assert!(e.message.contains("admins[0]"), "{e}");
        let e = parse_inventory(Path::new("fleet/Prod.yaml"), "hosts: {}\n").unwrap_err();
        assert!(e.message.contains("environment"), "{e}");
    }

    #[test]
    fn absent_or_null_labels_are_told_from_empty_ones() {
        let text = format!(
            "hosts:\n  web-1: {{ key: \"{AGE}\" }}\n  web-2: {{ labels: [] }}\n  web-3: {{ labels: null }}\n  web-5: {{ labels: [web] }}\n"
        );
        assert_eq!(hosts_without_labels(&text), ["web-1", "web-3"]);
        // All parse to no labels: the file alone tells "none on purpose".
        let inv = parse(&text).unwrap();
        assert_eq!(inv.labels_of("web-1"), Some(&[][..]));
    }
}
