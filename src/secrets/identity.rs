//! A private key that opens sealed files: a server's `identity_file`, or an
//! admin's `--identity` for `hoist secrets open|edit|rekey`.
//!
//! Two kinds are accepted, as SPEC §1 says: an age X25519 identity in age's
//! key file format (`# created: ...` and `# public key: ...` comments, then
//! `AGE-SECRET-KEY-1...`, as `age-keygen` and `hoist keygen` write it), or an
//! unencrypted OpenSSH ed25519 private key (so a server can reuse its SSH
//! host key; an admin may also use an RSA key, since `admins` may list
//! ssh-rsa keys). A passphrase-protected key is refused with a sentence
//! saying so: a daemon has nobody to type the passphrase.
//!
//! The key text is read into a buffer that is wiped when dropped, and no
//! error message ever quotes a line of the file.

use super::SecretsError;
use age::secrecy::ExposeSecret;
use age::secrecy::zeroize::Zeroizing;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A loaded private key and its public key.
pub struct Identity {
    key: Key,
    public: String,
    path: PathBuf,
}

enum Key {
    X25519(age::x25519::Identity),
    Ssh(age::ssh::Identity),
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({}, {})", self.path.display(), self.public)
    }
}

impl Identity {
    /// Reads the identity at `path`.
    pub fn load(path: &Path) -> Result<Identity, SecretsError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| SecretsError::Identity {
            path: path.to_path_buf(),
            reason: format!("cannot read the identity: {e}"),
        })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretsError::Identity {
            path: path.to_path_buf(),
            reason: "is not an identity (not text); expected an age identity (AGE-SECRET-KEY-1...) or an OpenSSH ed25519 private key".into(),
        })?;
        Identity::parse(path, text)
    }

    /// Parses identity text; `path` names it in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Identity, SecretsError> {
        let bad = |reason: String| SecretsError::Identity {
            path: path.to_path_buf(),
            reason,
        };
        let trimmed = text.trim_start();
        if trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            return parse_ssh(path, text);
        }
        if trimmed.starts_with("-----BEGIN") {
            return Err(bad(
                "is a PEM private key; hoist takes an age identity (hoist keygen writes one) or an OpenSSH ed25519 key (ssh-keygen -t ed25519)".into(),
            ));
        }
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("AGE-PLUGIN-") {
                return Err(bad(format!(
                    "line {} is an age plugin identity, which hoist does not support; use an age X25519 identity (hoist keygen)",
                    i + 1
                )));
            }
            if !line.starts_with("AGE-SECRET-KEY-1") {
                return Err(bad(format!(
                    "line {} is not an age identity (AGE-SECRET-KEY-1...) or a comment",
                    i + 1
                )));
            }
            let key: age::x25519::Identity = line.parse().map_err(|why: &str| {
                bad(format!(
                    "line {} is not a valid age identity ({why})",
                    i + 1
                ))
            })?;
            keys.push(key);
        }
        match keys.len() {
            0 => Err(bad(
                "holds no identity; expected an age identity (AGE-SECRET-KEY-1...) or an OpenSSH ed25519 private key".into(),
            )),
            1 => {
                let key = keys.remove(0);
                let public = key.to_public().to_string();
                Ok(Identity {
                    key: Key::X25519(key),
                    public,
                    path: path.to_path_buf(),
                })
            }
            n => Err(bad(format!(
                "holds {n} age identities; a server's identity_file holds exactly one"
            ))),
        }
    }

    /// The public key: `age1...` or `ssh-ed25519 AAAA...` (no comment), the
    /// form that goes into the inventory.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Where the identity was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn as_age(&self) -> &dyn age::Identity {
        match &self.key {
            Key::X25519(k) => k,
            Key::Ssh(k) => k,
        }
    }
}

/// A server's `identity_file`, as far as it goes: loaded, not set in the
/// host config, or set but unusable (not written yet, unreadable, not a
/// key). Only apps with secrets need it, so the last two are their error,
/// not the server's.
#[derive(Debug)]
pub enum ServerIdentity {
    Loaded(Identity),
    NotSet,
    Unusable {
        path: PathBuf,
        /// The file is not there (`hoist keygen` writes it).
        missing: bool,
        reason: String,
    },
}

impl ServerIdentity {
    /// Reads `identity_file` now.
    pub fn load(path: Option<&Path>) -> ServerIdentity {
        let Some(path) = path else {
            return ServerIdentity::NotSet;
        };
        match Identity::load(path) {
            Ok(i) => ServerIdentity::Loaded(i),
            Err(e) => {
                let missing = matches!(std::fs::symlink_metadata(path), Err(ref io) if io.kind() == std::io::ErrorKind::NotFound);
                let reason = match e {
                    SecretsError::Identity { reason, .. } => reason,
                    other => other.to_string(),
                };
                ServerIdentity::Unusable {
                    path: path.to_path_buf(),
                    missing,
                    reason,
                }
            }
        }
    }
}

fn parse_ssh(path: &Path, text: &str) -> Result<Identity, SecretsError> {
    let bad = |reason: String| SecretsError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    let key = ssh_key::PrivateKey::from_openssh(text.trim())
        .map_err(|e| bad(format!("is not a readable OpenSSH private key ({e})")))?;
    // A server's key is ed25519 (the inventory refuses ssh-rsa host keys);
    // an admin's may be RSA, as `admins` may list ssh-rsa keys.
    if !matches!(
        key.algorithm(),
        ssh_key::Algorithm::Ed25519 | ssh_key::Algorithm::Rsa { .. }
    ) {
        return Err(bad(format!(
            "is an OpenSSH {} key; hoist takes ed25519 keys (ssh-keygen -t ed25519), RSA keys for admins, or an age identity (hoist keygen)",
            key.algorithm()
        )));
    }
    if key.is_encrypted() {
        return Err(bad(
            "is protected by a passphrase, which hoist cannot type; use a key without one (ssh-keygen -t ed25519 -N '') or an age identity (hoist keygen)".into(),
        ));
    }
    let public = ssh_key::PublicKey::new(key.public_key().key_data().clone(), "")
        .to_openssh()
        .map_err(|e| bad(format!("its public key cannot be encoded ({e})")))?
        .trim()
        .to_string();
    let identity =
        age::ssh::Identity::from_buffer(text.as_bytes(), Some(path.display().to_string()))
            .map_err(|e| bad(format!("is not a usable OpenSSH key ({e})")))?;
    match identity {
        age::ssh::Identity::Unencrypted(_) => Ok(Identity {
            key: Key::Ssh(identity),
            public,
            path: path.to_path_buf(),
        }),
        age::ssh::Identity::Encrypted(_) => Err(bad(
            "is protected by a passphrase, which hoist cannot type; use a key without one or an age identity (hoist keygen)".into(),
        )),
        age::ssh::Identity::Unsupported(_) => Err(bad(
            "is an OpenSSH key that age cannot use; use an ed25519 key or an age identity (hoist keygen)".into(),
        )),
    }
}

/// `hoist keygen`: writes a new age X25519 identity to `path` (mode 0600,
/// never over an existing file) and returns its public key.
pub fn keygen(path: &Path) -> Result<String, SecretsError> {
    let key = age::x25519::Identity::generate();
    let public = key.to_public().to_string();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let secret = key.to_string();
    let text = Zeroizing::new(format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        secret.expose_secret()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SecretsError::Identity {
                    path: path.to_path_buf(),
                    reason: "already exists; hoist keygen never replaces a key (the inventory names its public key): remove it first if you mean to replace this server's identity".into(),
                }
            } else {
                SecretsError::Io {
                    action: "create",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(SecretsError::io("write", path));
    if let Err(e) = written {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::fsutil::sync_dir(parent).map_err(SecretsError::io("sync", parent))?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn keygen_writes_a_private_file_that_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        let public = keygen(&path).unwrap();
        assert!(public.starts_with("age1"), "{public}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("# public key: {public}\n")),
            "{text}"
        );
        assert!(text.starts_with("# created: "), "{text}");
        let id = Identity::load(&path).unwrap();
        assert_eq!(id.public_key(), public);
        // The reference tool reads it too, and agrees on the public key.
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&path)
            .output()
            .expect("age-keygen (Debian package age) runs");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), public);
    }

    #[test]
    fn keygen_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity");
        std::fs::write(&path, "precious").unwrap();
        let e = keygen(&path).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        // Nor through a dangling symlink.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(keygen(&link).is_err());
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn age_key_files_with_comments_parse() {
        let key = age::x25519::Identity::generate();
        let text = format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: {}\n\n{}\n",
            key.to_public(),
            key.to_string().expose_secret()
        );
        let id = Identity::parse(Path::new("id"), &text).unwrap();
        assert_eq!(id.public_key(), key.to_public().to_string());
    }

    #[test]
    fn bad_identities_are_named_without_quoting_them() {
        let secret = age::x25519::Identity::generate().to_string();
        let secret = secret.expose_secret();
        let cases = [
            ("", "holds no identity"),
            ("# only a comment\n", "holds no identity"),
            ("hello\n", "line 1 is not an age identity"),
            ("AGE-PLUGIN-YUBIKEY-1XYZ\n", "plugin"),
            ("-----BEGIN RSA PRIVATE KEY-----\nx\n", "PEM"),
        ];
        for (text, want) in cases {
            let e = Identity::parse(Path::new("/etc/hoist/identity"), text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("/etc/hoist/identity: "), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
        }
        // A damaged key: the message names the line, never the key.
        let damaged = format!("{}X\n", &secret[..secret.len() - 1]);
        let e = Identity::parse(Path::new("id"), &damaged)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1 is not a valid age identity"), "{e}");
        assert!(!e.contains(&secret[20..]), "{e}");
        let two = format!("{secret}\n{secret}\n");
        let e = Identity::parse(Path::new("id"), &two)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds 2 age identities"), "{e}");
    }

    fn ssh_keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-C", "test"])
            .args(args)
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        assert!(out.status.success(), "{out:?}");
        path
    }

    #[test]
    fn openssh_ed25519_keys_load_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ed = ssh_keygen(dir.path(), "ed", &["-t", "ed25519", "-N", ""]);
        let id = Identity::load(&ed).unwrap();
        let public = std::fs::read_to_string(ed.with_extension("pub")).unwrap();
        // The public key as ssh-keygen wrote it, without the comment.
        let mut parts = public.split_whitespace();
        let want = format!("{} {}", parts.next().unwrap(), parts.next().unwrap());
        assert_eq!(id.public_key(), want);

        let enc = ssh_keygen(dir.path(), "enc", &["-t", "ed25519", "-N", "secret words"]);
        let e = Identity::load(&enc).unwrap_err().to_string();
        assert!(e.contains("passphrase"), "{e}");

        // RSA (an admin's key) loads; ECDSA, which age cannot use, does not.
        let rsa = ssh_keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
        let id = Identity::load(&rsa).unwrap();
        assert!(
            id.public_key().starts_with("ssh-rsa AAAA"),
            "{}",
            id.public_key()
        );
        let ecdsa = ssh_keygen(dir.path(), "ecdsa", &["-t", "ecdsa", "-N", ""]);
        let e = Identity::load(&ecdsa).unwrap_err().to_string();
        assert!(e.contains("ed25519"), "{e}");

        let e = Identity::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the identity"), "{e}");
    }
}
