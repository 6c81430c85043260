//! Who may change a server: signature checks on what hoist is asked to run.
//!
//! Two independent gates, both off unless the host config turns them on:
//!
//! - **Commits** (`repo.allowed_signers_file`): the branch tip must carry an
//!   SSH signature (`git commit -S` with `gpg.format=ssh`) by a key listed in
//!   an OpenSSH allowed_signers file. Whoever can push to the config repo (or
//!   sit between it and the server) then still cannot get a commit applied.
//! - **Artifacts** (`storage.trusted_keys`): every artifact needs a minisign
//!   signature, fetched from the manifest's `signature_url`, by one of the
//!   trusted keys. Whoever can write to the object store then cannot get
//!   their own build run, even with a manifest naming its sha256.
//!
//! Both are pure checks over bytes handed in by the edges (`source` reads
//! the commit's signature, `engine` fetches the .minisig); a failure is a
//! one-sentence reason that becomes the commit status `error`.

use std::io::Read;
use std::path::Path;

/// The git signature namespace (`git commit -S` signs with `-n git`).
const GIT_NAMESPACE: &str = "git";

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    pub principals: String,
    pub key: ssh_key::PublicKey,
}

/// The keys of an OpenSSH allowed_signers file (`ssh-keygen -Y verify`
/// format: `principals [options] keytype base64 [comment]`).
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    pub signers: Vec<AllowedSigner>,
}

impl AllowedSigners {
    pub fn load(path: &Path) -> Result<AllowedSigners, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read repo.allowed_signers_file {}: {e}",
                path.display()
            )
        })?;
        AllowedSigners::parse(&text)
            .map_err(|(line, why)| format!("{}:{line}: {why}", path.display()))
    }

    /// Parses the file's text; an error names the line. Lines with the
    /// `cert-authority` option, or whose `namespaces=` leaves out `git`,
    /// grant nothing here and are skipped.
    pub fn parse(text: &str) -> Result<AllowedSigners, (usize, String)> {
        let mut signers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_fields(line);
            let Some(principals) = fields.first() else {
                continue;
            };
            let mut rest = &fields[1..];
            let mut options = "";
            if let Some(first) = rest.first()
                && !is_key_type(first)
            {
                options = first;
                rest = &rest[1..];
            }
            let (Some(kind), Some(b64)) = (rest.first(), rest.get(1)) else {
                return Err((i + 1, "expected `principals [options] keytype key`".into()));
            };
            let key = ssh_key::PublicKey::from_openssh(&format!("{kind} {b64}")).map_err(|e| {
                (
                    i + 1,
                    format!("the key is not a valid SSH public key ({e})"),
                )
            })?;
            let opts = parse_options(options);
            if opts
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("cert-authority"))
            {
                continue;
            }
            if let Some((_, ns)) = opts
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("namespaces"))
                && !ns.split(',').any(|n| n.trim() == GIT_NAMESPACE)
            {
                continue;
            }
            signers.push(AllowedSigner {
                principals: principals.to_string(),
                key,
            });
        }
        Ok(AllowedSigners { signers })
    }

    /// Checks an armored SSH signature (as git stores it in the commit's
    /// `gpgsig` header) over `signed` (the commit without that header).
    /// Returns the principals of the key that signed.
    pub fn verify(&self, signature: &[u8], signed: &[u8]) -> Result<String, String> {
        let text =
            std::str::from_utf8(signature).map_err(|_| "its signature is not text".to_string())?;
        if !text
            .trim_start()
            .starts_with("-----BEGIN SSH SIGNATURE-----")
        {
            return Err("it is signed, but not with an SSH key (gpg.format=ssh)".into());
        }
        let sig = ssh_key::SshSig::from_pem(text.trim())
            .map_err(|e| format!("its SSH signature cannot be read ({e})"))?;
        if sig.namespace() != GIT_NAMESPACE {
            return Err(format!(
                "its SSH signature is for namespace {:?}, not {GIT_NAMESPACE:?}",
                sig.namespace()
            ));
        }
        let Some(signer) = self
            .signers
            .iter()
            .find(|s| s.key.key_data() == sig.public_key())
        else {
            let fp =
                ssh_key::PublicKey::from(sig.public_key().clone()).fingerprint(Default::default());
            return Err(format!(
                "it is signed by {fp}, which is not in the allowed signers"
            ));
        };
        signer
            .key
            .verify(GIT_NAMESPACE, signed, &sig)
            .map_err(|e| format!("its SSH signature does not verify ({e})"))?;
        Ok(signer.principals.clone())
    }
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-")
        || s.starts_with("ecdsa-sha2-")
        || s.starts_with("sk-ssh-")
        || s.starts_with("sk-ecdsa-")
}

/// Splits on whitespace, keeping double-quoted runs (`namespaces="git,file"`) whole.
fn split_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `a,b="x,y",c` → [(a, ""), (b, "x,y"), (c, "")].
fn parse_options(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut push = |cur: &mut String| {
        if !cur.is_empty() {
            let (k, v) = cur.split_once('=').unwrap_or((cur.as_str(), ""));
            out.push((k.to_string(), v.trim_matches('"').to_string()));
            cur.clear();
        }
    };
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => push(&mut cur),
            c => cur.push(c),
        }
    }
    push(&mut cur);
    out
}

/// The minisign public keys of `storage.trusted_keys`.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<minisign_verify::PublicKey>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKeys({} keys)", self.keys.len())
    }
}

impl TrustedKeys {
    /// Each entry is a key as minisign prints it: the base64 line (`RW...`),
    /// optionally preceded by its `untrusted comment:` line.
    pub fn parse(entries: &[String]) -> Result<TrustedKeys, String> {
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let b64 = entry
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
                .unwrap_or("");
            let key = minisign_verify::PublicKey::from_base64(b64).map_err(|e| {
                format!(
                    "storage.trusted_keys entry {} is not a minisign public key ({e})",
                    i + 1
                )
            })?;
            keys.push(key);
        }
        Ok(TrustedKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks the minisign signature `sig` (the .minisig file's text) over
    /// the file at `artifact`, streaming it. Blocking.
    pub fn verify_file(&self, artifact: &Path, sig: &str) -> Result<(), String> {
        let sig = minisign_verify::Signature::decode(sig)
            .map_err(|e| format!("the signature cannot be read ({e})"))?;
        // The key id in the signature picks the key; a wrong id means no
        // trusted key made it.
        let mut last = "no trusted key made it".to_string();
        for key in &self.keys {
            let mut v = match key.verify_stream(&sig) {
                Ok(v) => v,
                Err(minisign_verify::Error::UnexpectedKeyId) => continue,
                Err(e) => {
                    last = format!("it is not valid ({e})");
                    continue;
                }
            };
            let mut f = std::fs::File::open(artifact)
                .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| format!("cannot read {}: {e}", artifact.display()))?;
                if n == 0 {
                    break;
                }
                v.update(&buf[..n]);
            }
            return match v.finalize() {
                Ok(()) => Ok(()),
                Err(_) => Err("it does not match the artifact".into()),
            };
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKevInHmXA/k2CmsaB9BwCu2Sa89AfEwPIG0w0SbFIh2";

    #[test]
    fn allowed_signers_lines_with_options_and_comments() {
        let text = format!(
            "# who may deploy\n\nalice@example.com {KEY} alice's laptop\n\
             bob@example.com,ci namespaces=\"git,file\" {KEY}\n\
             carol namespaces=\"file\" {KEY}\n\
             ca@example.com cert-authority {KEY}\n"
        );
        let s = AllowedSigners::parse(&text).unwrap();
        let names: Vec<&str> = s.signers.iter().map(|s| s.principals.as_str()).collect();
        assert_eq!(names, ["alice@example.com", "bob@example.com,ci"]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = AllowedSigners::parse("a ssh-ed25519 notbase64\n").unwrap_err();
        assert_eq!(e.0, 1);
        let e = AllowedSigners::parse(&format!("{KEY}\nx\n")).unwrap_err();
        assert_eq!(e.0, 1, "{e:?}");
    }

    #[test]
    fn gpg_and_garbage_signatures_are_refused() {
        let s = AllowedSigners::parse(&format!("a {KEY}\n")).unwrap();
        let e = s
            .verify(b"-----BEGIN PGP SIGNATURE-----\nx\n", b"data")
            .unwrap_err();
        assert!(e.contains("not with an SSH key"), "{e}");
        let e = s
            .verify(
                b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
                b"data",
            )
            .unwrap_err();
        assert!(e.contains("cannot be read"), "{e}");
    }

    #[test]
    fn trusted_keys_accept_the_line_or_the_whole_file() {
        let b64 = "RWRWB77VroWZA/FGSjsN8fH4aUneCJS7vTk0dDtgRy2ILYPGIP4AnzNZ";
        let full = format!("untrusted comment: minisign public key\n{b64}\n");
        let k = TrustedKeys::parse(&[b64.to_string(), full]).unwrap();
        assert_eq!(k.keys.len(), 2);
        let e = TrustedKeys::parse(&["nope".to_string()]).unwrap_err();
        assert!(e.contains("entry 1"), "{e}");
    }
}
