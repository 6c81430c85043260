//! Trusting an SSH server: its host key against an OpenSSH `known_hosts`
//! file (`repo.known_hosts_file`), the way `ssh` with
//! `StrictHostKeyChecking yes` would.
//!
//! libgit2 hands hoist the raw key the server offered; this module decides.
//! It understands what operators actually paste into the file: plain and
//! `[host]:port` names, globs and negations, hashed names (`|1|salt|hash`,
//! what `ssh-keyscan -H` and Debian's `HashKnownHosts yes` write) and the
//! `@revoked` marker. An unknown host, a changed key, and a key of a type the
//! file has no entry for are all refused, each with its own sentence, so the
//! operator knows whether to add a line or to worry.

use crate::config::glob_match;
use hmac::{KeyInit, Mac};
use ssh_key::known_hosts::{Entry, HostPatterns, KnownHosts, Marker};
use std::path::Path;

/// Where an SSH remote lives: the host as written in the URL and the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) user: Option<String>,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Endpoint {
    /// `ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`; None
    /// for anything else (https, file, a local path).
    pub(crate) fn of_url(url: &str) -> Option<Endpoint> {
        let (authority, default_port) = if let Some(rest) = url.strip_prefix("ssh://") {
            (rest.split('/').next().unwrap_or(""), true)
        } else if url.contains("://") || url.starts_with('/') {
            return None;
        } else {
            // scp-like: everything before the first ':' (a '/' before it
            // makes it a local path).
            let (authority, _) = url.split_once(':')?;
            if authority.is_empty() || authority.contains('/') {
                return None;
            }
            (authority, false)
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (h, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) if default_port => p.parse().ok()?,
                _ => 22,
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) if default_port => (h.to_string(), p.parse().ok()?),
                _ => (hostport.to_string(), 22),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Endpoint { user, host, port })
    }

    /// The name OpenSSH files this endpoint under: `host`, or `[host]:port`
    /// off port 22.
    pub(crate) fn known_hosts_name(&self) -> String {
        let host = self.host.to_ascii_lowercase();
        if self.port == 22 {
            host
        } else {
            format!("[{host}]:{}", self.port)
        }
    }
}

/// Checks the key `offered` (SSH wire encoding, as the server sent it)
/// against the known_hosts text; `Err` is the sentence to show.
pub(crate) fn check(
    file: &Path,
    text: &str,
    endpoint: &Endpoint,
    offered: &[u8],
) -> Result<(), String> {
    let name = endpoint.known_hosts_name();
    let offered_alg = key_algorithm(offered).unwrap_or_else(|| "unknown".into());
    let mut known_algs: Vec<String> = Vec::new();
    let mut accepted = false;
    for entry in KnownHosts::new(text).flatten() {
        if !matches_host(&entry, &name) {
            continue;
        }
        let Ok(key) = entry.public_key().to_bytes() else {
            continue;
        };
        match entry.marker() {
            Some(Marker::Revoked) if key == offered => {
                return Err(format!(
                    "the SSH host key of {name} is marked @revoked in known_hosts_file {}",
                    file.display()
                ));
            }
            Some(_) => continue,
            None => {}
        }
        if key == offered {
            accepted = true;
        }
        let alg = entry.public_key().algorithm().as_str().to_string();
        if !known_algs.contains(&alg) {
            known_algs.push(alg);
        }
    }
    if accepted {
        return Ok(());
    }
    let file = file.display();
    if known_algs.is_empty() {
        Err(format!(
            "{name} is not in known_hosts_file {file}, and hoist does not connect to unknown \
             hosts (add its key, e.g. the output of ssh-keyscan{} {})",
            if endpoint.port == 22 {
                String::new()
            } else {
                format!(" -p {}", endpoint.port)
            },
            endpoint.host
        ))
    } else if known_algs.contains(&offered_alg) {
        Err(format!(
            "the SSH host key of {name} has changed: the {offered_alg} key it offered does not match \
             known_hosts_file {file} (the server was replaced, or someone is in the middle; \
             update the file only once you know which)"
        ))
    } else {
        Err(format!(
            "{name} offered a {offered_alg} host key, and known_hosts_file {file} has only {} keys \
             for it (add its {offered_alg} key, e.g. from ssh-keyscan -t {offered_alg})",
            known_algs.join(", ")
        ))
    }
}

/// The algorithm name at the start of an SSH public key blob.
fn key_algorithm(blob: &[u8]) -> Option<String> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = blob.get(4..4 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

fn matches_host(entry: &Entry, name: &str) -> bool {
    match entry.host_patterns() {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let mut matched = false;
            for p in patterns {
                if let Some(negated) = p.strip_prefix('!') {
                    if glob_match(&negated.to_ascii_lowercase(), name) {
                        return false;
                    }
                } else if glob_match(&p.to_ascii_lowercase(), name) {
                    matched = true;
                }
            }
            matched
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZs8Uwg1YZEiC9juK+4GxhCQe5fMASkuLzWj5WJatwl";
    const ED_OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJKwpaXE3VxjiYbk8Z4ZK7VGDH7/skLj1PACZQXmiPlg";

    fn blob(line: &str) -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(line)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    fn ep(url: &str) -> Endpoint {
        Endpoint::of_url(url).unwrap()
    }

    fn run(text: &str, url: &str, key: &str) -> Result<(), String> {
        check(
            Path::new("/etc/hoist/known_hosts"),
            text,
            &ep(url),
            &blob(key),
        )
    }

    #[test]
    fn endpoints_from_urls() {
        let e = ep("ssh://git@git.example.com:2222/acme/deploy.git");
        assert_eq!(
            (e.user.as_deref(), e.host.as_str(), e.port),
            (Some("git"), "git.example.com", 2222)
        );
        assert_eq!(e.known_hosts_name(), "[git.example.com]:2222");
        let e = ep("git@Git.Example.com:acme/deploy.git");
        assert_eq!((e.host.as_str(), e.port), ("Git.Example.com", 22));
        assert_eq!(e.known_hosts_name(), "git.example.com");
        assert_eq!(ep("ssh://[::1]:2200/x").known_hosts_name(), "[::1]:2200");
        assert_eq!(ep("ssh://host/x").port, 22);
        assert!(Endpoint::of_url("https://host/x").is_none());
        assert!(Endpoint::of_url("/srv/config.git").is_none());
        assert!(Endpoint::of_url("./a:b").is_none());
    }

    #[test]
    fn a_known_key_is_accepted_by_plain_port_glob_and_hashed_names() {
        assert!(
            run(
                &format!("git.example.com {ED}\n"),
                "ssh://git.example.com/x",
                ED
            )
            .is_ok()
        );
        assert!(
            run(
                &format!("[127.0.0.1]:2222 {ED}\n"),
                "ssh://127.0.0.1:2222/x",
                ED
            )
            .is_ok()
        );
        assert!(
            run(
                &format!("*.example.com,!evil.example.com {ED}\n"),
                "git@git.example.com:x",
                ED
            )
            .is_ok()
        );
        // `ssh-keyscan -H -p 2222 127.0.0.1`: HMAC-SHA1 of "[127.0.0.1]:2222".
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} {ED}\n",
            base64_std(&salt),
            base64_std(hash.as_slice())
        );
        assert!(run(&line, "ssh://127.0.0.1:2222/x", ED).is_ok(), "{line}");
        assert!(run(&line, "ssh://127.0.0.1:2223/x", ED).is_err());
    }

    #[test]
    fn unknown_changed_other_type_and_revoked_are_refused_clearly() {
        let e = run(
            &format!("other.example.com {ED}\n"),
            "ssh://git.example.com:2222/x",
            ED,
        )
        .unwrap_err();
        assert!(
            e.contains("[git.example.com]:2222 is not in known_hosts_file"),
            "{e}"
        );
        assert!(e.contains("ssh-keyscan -p 2222 git.example.com"), "{e}");
        // Same name, port 22 only: a different port is another host.
        let e = run(
            &format!("git.example.com {ED}\n"),
            "ssh://git.example.com:2222/x",
            ED,
        )
        .unwrap_err();
        assert!(e.contains("not in known_hosts_file"), "{e}");
        let e = run(
            &format!("git.example.com {ED_OTHER}\n"),
            "ssh://git.example.com/x",
            ED,
        )
        .unwrap_err();
        assert!(e.contains("has changed"), "{e}");
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC3QPpZ/TxlBVxLqmMB4fB4bTiHOMXPGtLvvthE0kbMH4V3V+LPBfhxjwK1dsFRjCz2jR44n0N8ZzPHLU4hl7FvStTD1T3XhQfOxW8vqYlm+l4FTYnPWawgdyyl/Vtgoksug+0kXclvO6dbWslL4bP0UJj805pkAhMKalzeK7DwZw==";
        let e = run(
            &format!("git.example.com {rsa}\n"),
            "ssh://git.example.com/x",
            ED,
        )
        .unwrap_err();
        assert!(e.contains("offered a ssh-ed25519 host key"), "{e}");
        assert!(e.contains("only ssh-rsa keys"), "{e}");
        let e = run(
            &format!("@revoked git.example.com {ED}\ngit.example.com {ED}\n"),
            "ssh://git.example.com/x",
            ED,
        )
        .unwrap_err();
        assert!(e.contains("@revoked"), "{e}");
        let e = run(
            &format!("*.example.com,!git.example.com {ED}\n"),
            "ssh://git.example.com/x",
            ED,
        )
        .unwrap_err();
        assert!(e.contains("not in known_hosts_file"), "{e}");
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.example.com", "git.example.com"));
        assert!(glob_match("git?.example.com", "git1.example.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("a*b", "acd"));
    }

    fn base64_std(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            out.push(A[(n >> 18) as usize & 63] as char);
            out.push(A[(n >> 12) as usize & 63] as char);
            out.push(if c.len() > 1 {
                A[(n >> 6) as usize & 63] as char
            } else {
                '='
            });
            out.push(if c.len() > 2 {
                A[n as usize & 63] as char
            } else {
                '='
            });
        }
        out
    }
}
