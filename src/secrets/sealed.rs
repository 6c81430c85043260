//! The age format (age-encryption.org/v1): sealing, opening, and telling an
//! age file from anything else.
//!
//! **Armored output.** `seal` writes the ASCII armor (`-----BEGIN AGE
//! ENCRYPTED FILE-----`): sealed files live in git, and text shows up in a
//! review as "this file changed" with a readable diff instead of "Binary
//! files differ", survives copy and paste through a web editor, and is what
//! `age -a` writes. Opening takes both forms, as the reference tool does.
//!
//! **The recipient list.** An age header does not say whom an X25519 stanza
//! is for (that is a feature of the format). But `hoist secrets rekey` must
//! leave a file byte for byte alone when its recipients did not change, or
//! every run would rewrite every file and git would show a diff for nothing.
//! So `seal` adds one more stanza, `-> hoist-recipients <tag> <tag>...`, with
//! the tag (a short hash of the public key, `recipients::recipient_tag`) of
//! each recipient and an empty body. The age spec has identities skip
//! stanzas they do not know (the reference tools already meet random
//! "grease" stanzas in every file rage writes), so `age -d` opens these
//! files as any other; the stanza is covered by the header's MAC, and it
//! reveals nothing the inventory beside it does not already say. A file
//! without it (sealed by `age -r`) simply counts as "recipients unknown" and
//! is re-sealed once by `rekey`.

use super::{Identity, Plaintext, RecipientSet, SecretsError, ServerIdentity};
use age::armor::{ArmoredReader, ArmoredWriter, Format};
use age::secrecy::zeroize::Zeroizing;
use age_core::format::{FileKey, Stanza};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io::{Read, Write};

/// The tag of the stanza that lists a file's recipients.
pub(crate) const RECIPIENTS_STANZA: &str = "hoist-recipients";

const BINARY_MAGIC: &[u8] = b"age-encryption.org/";
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";

/// Why a sealed file cannot be opened. Each says what fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFailure {
    /// Not age at all (a plaintext file committed by mistake, say).
    NotAge,
    /// Looks like age but its header, MAC or payload is broken.
    Damaged(String),
    /// Sealed with a passphrase (`age -p`), which nothing on a server can type.
    Passphrase,
    /// Not sealed to this server's `identity_file`.
    NotSealedToServer {
        public_key: String,
        inventory: String,
    },
    /// Not sealed to the `--identity` given to a command.
    NotSealedToKey {
        public_key: String,
        key_file: String,
    },
}

impl fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenFailure::NotAge => write!(
                f,
                "it is not an age file (age-encryption.org/v1, binary or armored); seal the plaintext with `hoist secrets seal`"
            ),
            OpenFailure::Damaged(why) => write!(
                f,
                "it is damaged ({why}); seal the plaintext again with `hoist secrets seal`"
            ),
            OpenFailure::Passphrase => write!(
                f,
                "it is sealed with a passphrase, which hoist does not use; seal it to the inventory's keys with `hoist secrets seal`"
            ),
            OpenFailure::NotSealedToServer {
                public_key,
                inventory,
            } => write!(
                f,
                "not sealed to this server: add its key to {inventory}, run `hoist secrets rekey` (this server's key: {public_key})"
            ),
            OpenFailure::NotSealedToKey {
                public_key,
                key_file,
            } => write!(
                f,
                "it is not sealed to {key_file} ({public_key}); add that key to `admins` in the inventory and have someone who can open the file run `hoist secrets rekey`"
            ),
        }
    }
}

/// The stanza listing the recipients' tags. It wraps nothing: the file key
/// never goes into it.
struct RecipientList(Vec<String>);

impl age::Recipient for RecipientList {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: RECIPIENTS_STANZA.to_string(),
                args: self.0.clone(),
                body: Vec::new(),
            }],
            HashSet::new(),
        ))
    }
}

/// Seals `plaintext` to every recipient of the set, armored.
pub fn seal(recipients: &RecipientSet, plaintext: &[u8]) -> Result<String, SecretsError> {
    if recipients.is_empty() {
        return Err(SecretsError::Seal(
            "there is nobody to seal to (no host key and no admins)".into(),
        ));
    }
    let keys = recipients.to_age().map_err(SecretsError::Seal)?;
    let list = RecipientList(recipients.tags().into_iter().collect());
    let all = keys
        .iter()
        .map(|k| k.as_ref() as &dyn age::Recipient)
        .chain(std::iter::once(&list as &dyn age::Recipient));
    let encryptor = age::Encryptor::with_recipients(all)
        .map_err(|e| SecretsError::Seal(format!("cannot seal: {e}")))?;
    let mut out = Vec::with_capacity(plaintext.len() * 4 / 3 + 1024);
    let write = |out: &mut Vec<u8>| -> std::io::Result<()> {
        let armor = ArmoredWriter::wrap_output(out, Format::AsciiArmor)?;
        let mut w = encryptor.wrap_output(armor)?;
        w.write_all(plaintext)?;
        w.finish()?.finish()?;
        Ok(())
    };
    write(&mut out).map_err(|e| SecretsError::Seal(format!("cannot seal: {e}")))?;
    String::from_utf8(out).map_err(|_| SecretsError::Seal("armor is not text".into()))
}

/// Whether `bytes` start like an age file, binary or armored.
fn looks_like_age(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    bytes.starts_with(BINARY_MAGIC) || bytes[start..].starts_with(ARMOR_BEGIN)
}

/// Checks that `bytes` are an age file whose header reads (what `hoist
/// check` asks of a sealed file; it cannot check more without a key).
pub fn is_age_file(bytes: &[u8]) -> Result<(), OpenFailure> {
    decryptor(bytes).map(|_| ())
}

fn decryptor(
    bytes: &[u8],
) -> Result<age::Decryptor<ArmoredReader<std::io::BufReader<&[u8]>>>, OpenFailure> {
    if !looks_like_age(bytes) {
        return Err(OpenFailure::NotAge);
    }
    let d = age::Decryptor::new_buffered(ArmoredReader::new(bytes)).map_err(|e| match e {
        age::DecryptError::UnknownFormat => {
            OpenFailure::Damaged("an age format version this hoist does not know".into())
        }
        age::DecryptError::Io(e) => OpenFailure::Damaged(format!("its armor or header: {e}")),
        _ => OpenFailure::Damaged("its header cannot be read".into()),
    })?;
    if d.is_scrypt() {
        return Err(OpenFailure::Passphrase);
    }
    Ok(d)
}

/// Ok(plaintext); Err(None) when the identity is not a recipient.
fn decrypt(identity: &Identity, bytes: &[u8]) -> Result<Plaintext, Option<OpenFailure>> {
    let d = decryptor(bytes).map_err(Some)?;
    let mut reader = d
        .decrypt(std::iter::once(identity.as_age()))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => None,
            age::DecryptError::InvalidMac => Some(OpenFailure::Damaged(
                "its header does not match its MAC: it was changed after sealing".into(),
            )),
            _ => Some(OpenFailure::Damaged(
                "its file key cannot be unwrapped".into(),
            )),
        })?;
    // Sized up front so the buffer is never reallocated, which would leave
    // an unwiped copy of the plaintext behind.
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    reader.read_to_end(&mut out).map_err(|_| {
        Some(OpenFailure::Damaged(
            "its content does not decrypt: it is truncated or was changed".into(),
        ))
    })?;
    Ok(Plaintext(out))
}

/// Opens a sealed file with an admin's `--identity` (`file` names it).
pub fn open(identity: &Identity, file: &str, bytes: &[u8]) -> Result<Plaintext, SecretsError> {
    decrypt(identity, bytes).map_err(|why| SecretsError::Open {
        file: file.to_string(),
        why: why.unwrap_or_else(|| OpenFailure::NotSealedToKey {
            public_key: identity.public_key().to_string(),
            key_file: identity.path().display().to_string(),
        }),
    })
}

/// Opens a sealed file on a server: with its `identity_file`, naming the
/// inventory of `environment` in the fix when the key is missing or is not
/// one the file was sealed to.
pub fn open_for_server(
    identity: &ServerIdentity,
    file: &str,
    bytes: &[u8],
    environment: &str,
) -> Result<Plaintext, SecretsError> {
    let inventory = crate::config::inventory_path(environment)
        .display()
        .to_string();
    let identity = match identity {
        ServerIdentity::Loaded(i) => i,
        ServerIdentity::NotSet => {
            return Err(SecretsError::NoIdentity {
                file: file.to_string(),
                inventory,
            });
        }
        ServerIdentity::Unusable {
            path,
            missing,
            reason,
        } => {
            return Err(SecretsError::IdentityUnusable {
                file: file.to_string(),
                path: path.clone(),
                why: if *missing {
                    format!(
                        "does not exist: run `hoist keygen -o {}`, add the key it prints to {inventory} and re-seal with `hoist secrets rekey`",
                        path.display()
                    )
                } else {
                    format!("cannot be used: {reason}")
                },
            });
        }
    };
    decrypt(identity, bytes).map_err(|why| SecretsError::Open {
        file: file.to_string(),
        why: why.unwrap_or_else(|| OpenFailure::NotSealedToServer {
            public_key: identity.public_key().to_string(),
            inventory,
        }),
    })
}

/// The recipient tags a file sealed by hoist lists, when it lists them and
/// the list agrees with the header (one tag per X25519/ssh stanza). None for
/// a file sealed by other tools, or anything unreadable: "unknown".
pub fn sealed_recipient_tags(bytes: &[u8]) -> Option<BTreeSet<String>> {
    if !looks_like_age(bytes) {
        return None;
    }
    let mut header = Vec::new();
    let mut reader = ArmoredReader::new(bytes);
    // The header ends at the MAC line; read just past it.
    let mut chunk = [0u8; 4096];
    let mut searched = 0;
    while !header[searched..].windows(4).any(|w| w == b"\n---") {
        searched = header.len().saturating_sub(3);
        let n = reader.read(&mut chunk).ok()?;
        if n == 0 || header.len() > 1 << 20 {
            return None;
        }
        header.extend_from_slice(&chunk[..n]);
    }
    let mut lines = header.split(|b| *b == b'\n');
    if lines.next()? != b"age-encryption.org/v1" {
        return None;
    }
    let mut listed: Option<BTreeSet<String>> = None;
    let mut keyed = 0usize;
    for line in lines {
        if line.starts_with(b"---") {
            break;
        }
        let Some(stanza) = line.strip_prefix(b"-> ") else {
            continue;
        };
        let stanza = std::str::from_utf8(stanza).ok()?;
        let mut parts = stanza.split(' ');
        match parts.next()? {
            RECIPIENTS_STANZA => {
                if listed.is_some() {
                    return None;
                }
                listed = Some(parts.map(String::from).collect());
            }
            "X25519" | "ssh-ed25519" | "ssh-rsa" => keyed += 1,
            _ => {}
        }
    }
    listed.filter(|tags| tags.len() == keyed)
}

#[cfg(test)]
mod tests {
    use super::super::Recipient;
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::path::Path;

    fn age_identity() -> (Identity, String) {
        let key = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let id = Identity::parse(Path::new("id.txt"), key.to_string().expose_secret()).unwrap();
        (id, public)
    }

    fn set(keys: &[&str]) -> RecipientSet {
        let mut s = RecipientSet::default();
        for (i, k) in keys.iter().enumerate() {
            s.add(Recipient::new(&format!("r{i}"), k).unwrap());
        }
        s
    }

    #[test]
    fn sealed_armored_opens_for_each_recipient_only() {
        let (a, a_pub) = age_identity();
        let (b, b_pub) = age_identity();
        let (c, _) = age_identity();
        let sealed = seal(&set(&[&a_pub, &b_pub]), b"TOKEN=s3cr3t\n").unwrap();
        assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"));
        assert!(!sealed.contains("s3cr3t"));
        for id in [&a, &b] {
            let p = open(id, "x.age", sealed.as_bytes()).unwrap();
            assert_eq!(p.as_bytes(), b"TOKEN=s3cr3t\n");
        }
        let e = open(&c, "secrets/production/web.env.age", sealed.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "secrets/production/web.env.age cannot be opened: it is not sealed to id.txt"
            ),
            "{e}"
        );
        let e = open_for_server(
            &ServerIdentity::Loaded(c),
            "secrets/production/web.env.age",
            sealed.as_bytes(),
            "production",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("(this server's key: age1"), "{e}");
        assert!(
            e.contains(
                "not sealed to this server: add its key to fleet/production.yaml, run `hoist secrets rekey`"
            ),
            "{e}"
        );
        let e = open_for_server(
            &ServerIdentity::NotSet,
            "s/x.age",
            sealed.as_bytes(),
            "staging",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sets no identity_file"), "{e}");
        assert!(e.contains("fleet/staging.yaml"), "{e}");
        // Set, but not written yet: the file, and how to make it.
        let missing = std::path::Path::new("/etc/hoist/identity-not-there");
        let e = open_for_server(
            &ServerIdentity::load(Some(missing)),
            "s/x.age",
            sealed.as_bytes(),
            "staging",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("s/x.age cannot be opened: identity_file /etc/hoist/identity-not-there does not exist: run `hoist keygen -o /etc/hoist/identity-not-there`"),
            "{e}"
        );
        assert!(e.contains("fleet/staging.yaml"), "{e}");
    }

    #[test]
    fn the_recipient_list_reads_back_and_is_checked_against_the_header() {
        let (_, a_pub) = age_identity();
        let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKevInHmXA/k2CmsaB9BwCu2Sa89AfEwPIG0w0SbFIh2";
        let s = set(&[&a_pub, ed]);
        let sealed = seal(&s, b"x").unwrap();
        assert_eq!(sealed_recipient_tags(sealed.as_bytes()), Some(s.tags()));
        // Binary (de-armored) files read the same.
        let mut binary = Vec::new();
        ArmoredReader::new(sealed.as_bytes())
            .read_to_end(&mut binary)
            .unwrap();
        assert!(binary.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(sealed_recipient_tags(&binary), Some(s.tags()));
        // A list that does not agree with the stanzas counts as unknown.
        let text = String::from_utf8_lossy(&binary).into_owned();
        let first_tag = s.tags().into_iter().next().unwrap();
        let doctored = text.replacen(&format!(" {first_tag}"), "", 1);
        assert_ne!(doctored, text);
        assert_eq!(sealed_recipient_tags(doctored.as_bytes()), None);
        assert_eq!(sealed_recipient_tags(b"plain text"), None);
    }

    #[test]
    fn not_age_damaged_and_passphrase_files_say_so() {
        let (a, a_pub) = age_identity();
        let e = open(&a, "s/x.age", b"DB_PASSWORD=hunter2\n").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("is not an age file"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(
            is_age_file(b"DB_PASSWORD=hunter2\n"),
            Err(OpenFailure::NotAge)
        );

        let sealed = seal(&set(&[&a_pub]), b"payload that is long enough").unwrap();
        assert_eq!(is_age_file(sealed.as_bytes()), Ok(()));
        // Truncated armor.
        let cut = &sealed[..sealed.len() / 2];
        let e = open(&a, "s/x.age", cut.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        // A flipped payload byte in the binary form.
        let mut binary = Vec::new();
        ArmoredReader::new(sealed.as_bytes())
            .read_to_end(&mut binary)
            .unwrap();
        let last = binary.len() - 3;
        binary[last] ^= 1;
        let e = open(&a, "s/x.age", &binary).unwrap_err().to_string();
        assert!(e.contains("does not decrypt"), "{e}");
        // A changed header fails its MAC.
        let mut binary2 = Vec::new();
        ArmoredReader::new(sealed.as_bytes())
            .read_to_end(&mut binary2)
            .unwrap();
        let text = String::from_utf8_lossy(&binary2).into_owned();
        let i = text.find(RECIPIENTS_STANZA).unwrap() + RECIPIENTS_STANZA.len() + 1;
        binary2[i] = if binary2[i] == b'a' { b'b' } else { b'a' };
        let e = open(&a, "s/x.age", &binary2).unwrap_err().to_string();
        assert!(e.contains("MAC"), "{e}");

        let p = age::Encryptor::with_user_passphrase("pw".to_string().into());
        let mut out = Vec::new();
        let mut w = p.wrap_output(&mut out).unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        let e = open(&a, "s/x.age", &out).unwrap_err().to_string();
        assert!(e.contains("passphrase"), "{e}");
    }

    #[test]
    fn nobody_to_seal_to_is_an_error() {
        let e = seal(&RecipientSet::default(), b"x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nobody to seal to"), "{e}");
    }
}
