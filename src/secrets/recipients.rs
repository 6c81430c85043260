//! Whom a sealed file is sealed to, worked out from the inventory
//! (`fleet/<environment>.yaml`, SPEC §2): the hosts an app's `targets`
//! select (all hosts when no app is given), plus `admins`.
//!
//! Keys are kept in one canonical form (`age1...`, or `ssh-ed25519 AAAA...`
//! without the comment), so the same key written twice, or once with a
//! comment, is one recipient. Each recipient also has a short *tag*, a hash
//! of that canonical form: sealed files carry their recipients' tags (see
//! `sealed`), which is how `rekey` knows a file already has the right
//! recipients and leaves it byte for byte as it is.

use crate::config::{Inventory, KeyKind, Targets, recipient_kind};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// One key a file is sealed to, with the name it has in the inventory
/// (`web-1`, `admins[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    /// Canonical form: `age1...` or `ssh-ed25519 AAAA...` / `ssh-rsa AAAA...`.
    pub key: String,
    kind: KeyKind,
}

impl Recipient {
    /// Parses a key as the inventory writes it.
    pub fn new(name: &str, key: &str) -> Result<Recipient, String> {
        let kind = recipient_kind(key).map_err(|why| format!("{name}'s key {why}"))?;
        let key = match kind {
            KeyKind::Age => key
                .trim()
                .parse::<age::x25519::Recipient>()
                .map(|r| r.to_string())
                .map_err(|e| format!("{name}'s key is not a valid age recipient ({e})"))?,
            KeyKind::SshEd25519 | KeyKind::SshRsa => {
                let mut parts = key.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(t), Some(b64)) => format!("{t} {b64}"),
                    _ => return Err(format!("{name}'s key is not an OpenSSH public key")),
                }
            }
        };
        Ok(Recipient {
            name: name.to_string(),
            key,
            kind,
        })
    }

    pub fn tag(&self) -> String {
        recipient_tag(&self.key)
    }

    fn to_age(&self) -> Result<Box<dyn age::Recipient + Send>, String> {
        match self.kind {
            KeyKind::Age => self
                .key
                .parse::<age::x25519::Recipient>()
                .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
                .map_err(|e| format!("{}'s key is not a valid age recipient ({e})", self.name)),
            KeyKind::SshEd25519 | KeyKind::SshRsa => self
                .key
                .parse::<age::ssh::Recipient>()
                .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
                .map_err(|e| {
                    format!(
                        "{}'s key is not an OpenSSH key age can seal to ({e:?})",
                        self.name
                    )
                }),
        }
    }
}

/// The tag of a canonical key: 8 bytes of SHA-256, in hex. Public keys are
/// public, so this hides nothing; it is short because a file lists one per
/// recipient.
pub fn recipient_tag(canonical_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"hoist recipient v1\n");
    h.update(canonical_key.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The recipients of one sealed file.
#[derive(Debug, Clone, Default)]
pub struct RecipientSet {
    recipients: Vec<Recipient>,
    /// Hosts that would be recipients but have no `key` in the inventory:
    /// they will not be able to open the file.
    pub hosts_without_key: Vec<String>,
}

impl RecipientSet {
    /// The hosts `targets` selects (every host for `None`) plus the admins.
    pub fn from_inventory(
        inventory: &Inventory,
        targets: Option<&Targets>,
    ) -> Result<RecipientSet, String> {
        let mut set = RecipientSet::default();
        for host in inventory.hosts_targeted(targets) {
            match inventory.hosts.get(&host).and_then(|h| h.key.as_deref()) {
                Some(key) => set.add(Recipient::new(&host, key)?),
                None => set.hosts_without_key.push(host),
            }
        }
        for (i, key) in inventory.admins.iter().enumerate() {
            set.add(Recipient::new(&format!("admins[{i}]"), key)?);
        }
        Ok(set)
    }

    /// Adds a recipient unless its key is already in the set.
    pub fn add(&mut self, r: Recipient) {
        if !self.recipients.iter().any(|x| x.key == r.key) {
            self.recipients.push(r);
        }
    }

    /// Everyone in `other` too (a file named by several apps or
    /// environments is sealed to all of their hosts).
    pub fn extend(&mut self, other: RecipientSet) {
        for r in other.recipients {
            self.add(r);
        }
        for h in other.hosts_without_key {
            if !self.hosts_without_key.contains(&h) {
                self.hosts_without_key.push(h);
            }
        }
    }

    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    pub fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    pub fn len(&self) -> usize {
        self.recipients.len()
    }

    /// The tags of every recipient, sorted.
    pub fn tags(&self) -> BTreeSet<String> {
        self.recipients.iter().map(Recipient::tag).collect()
    }

    pub(crate) fn to_age(&self) -> Result<Vec<Box<dyn age::Recipient + Send>>, String> {
        self.recipients.iter().map(Recipient::to_age).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_inventory;
    use std::path::Path;

    const A1: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKevInHmXA/k2CmsaB9BwCu2Sa89AfEwPIG0w0SbFIh2";

    fn inventory(text: &str) -> Inventory {
        parse_inventory(Path::new("fleet/production.yaml"), text)
            .unwrap()
            .1
    }

    #[test]
    fn targeted_hosts_plus_admins_hosts_without_keys_listed() {
        let a2 = age::x25519::Identity::generate().to_public().to_string();
        let inv = inventory(&format!(
            "hosts:\n  web-1: {{ labels: [web], key: \"{A1}\" }}\n  web-2: {{ labels: [web] }}\n  db-1: {{ labels: [db], key: \"{ED} db-1\" }}\nadmins:\n  - \"{a2}\"\n"
        ));
        let web = Targets {
            hosts: vec![],
            labels: vec!["web".into()],
        };
        let set = RecipientSet::from_inventory(&inv, Some(&web)).unwrap();
        let names: Vec<&str> = set.recipients().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["web-1", "admins[0]"]);
        assert_eq!(set.hosts_without_key, ["web-2"]);

        let all = RecipientSet::from_inventory(&inv, None).unwrap();
        let names: Vec<&str> = all.recipients().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db-1", "web-1", "admins[0]"]);
        // The comment is not part of the key.
        assert_eq!(all.recipients()[0].key, ED);
        assert_eq!(all.tags().len(), 3);
    }

    #[test]
    fn the_same_key_twice_is_one_recipient() {
        let inv = inventory(&format!(
            "hosts:\n  web-1: {{ key: \"{ED} web-1\" }}\nadmins:\n  - \"{ED} alice@laptop\"\n"
        ));
        let set = RecipientSet::from_inventory(&inv, None).unwrap();
        assert_eq!(set.len(), 1);
        let mut other = RecipientSet::default();
        other.add(Recipient::new("x", A1).unwrap());
        let mut merged = set.clone();
        merged.extend(other);
        merged.extend(set);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn tags_depend_on_the_key_only() {
        let a = Recipient::new("a", &format!("{ED} one comment")).unwrap();
        let b = Recipient::new("b", &format!("  {ED}  ")).unwrap();
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.tag().len(), 16);
        assert_ne!(a.tag(), Recipient::new("c", A1).unwrap().tag());
        assert!(Recipient::new("d", "age1nope").is_err());
    }
}
