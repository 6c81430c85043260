//! The `hoist keygen` and `hoist secrets ...` commands, and the sealed-file
//! part of `hoist check`: each calls `repo`/`identity`/`sealed` and prints
//! what happened. Results go to standard output (the public key, the
//! plaintext for `open`), everything said to the person to standard error,
//! so `hoist secrets open f --identity k > .env` and `hoist keygen | tee`
//! capture only what they should.

use super::repo::{self, ConfigRepo, EditOutcome};
use super::{Identity, Plaintext, RecipientSet, SecretsError, keygen, open, seal};
use crate::config::AppSet;
use age::secrecy::zeroize::Zeroizing;
use std::io::{Read, Write};
use std::path::Path;

/// `hoist keygen -o FILE`: prints the new public key on standard output.
pub fn keygen_cmd(path: &Path) -> Result<(), SecretsError> {
    let public = keygen(path)?;
    println!("{public}");
    eprintln!(
        "hoist: wrote {} (mode 0600); add the key above as this host's `key` in fleet/<environment>.yaml, then run `hoist secrets rekey`",
        path.display()
    );
    Ok(())
}

fn warn_hosts_without_key(recipients: &RecipientSet, what: &str) {
    for host in &recipients.hosts_without_key {
        eprintln!(
            "hoist: warning: host {host} has no key in the inventory, so it cannot open {what}"
        );
    }
}

fn names(recipients: &RecipientSet) -> String {
    recipients
        .recipients()
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `hoist secrets seal --env ENV [--app APP] IN OUT` (`-` for standard
/// input and output).
pub fn seal_cmd(
    repo: &ConfigRepo,
    environment: &str,
    app: Option<&str>,
    input: &Path,
    output: &Path,
) -> Result<(), SecretsError> {
    let recipients = repo::recipients_for_env(repo, environment, app)?;
    let out_name = output.display().to_string();
    warn_hosts_without_key(&recipients, &out_name);
    if recipients.is_empty() {
        return Err(SecretsError::Seal(format!(
            "{} lists nobody to seal to for {}: no host key and no admins",
            crate::config::inventory_path(environment).display(),
            app.unwrap_or("this environment")
        )));
    }
    let plaintext = read_input(input)?;
    let text = seal(&recipients, plaintext.as_bytes())?;
    if output == Path::new("-") {
        std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(SecretsError::io("write", "standard output"))?;
    } else {
        if let Some(parent) = output.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(SecretsError::io("create", parent))?;
        }
        crate::fsutil::write_atomic(output, text.as_bytes())
            .map_err(SecretsError::io("write", output))?;
    }
    eprintln!(
        "hoist: sealed {out_name} to {} recipient(s): {}",
        recipients.len(),
        names(&recipients)
    );
    Ok(())
}

fn read_input(input: &Path) -> Result<Plaintext, SecretsError> {
    let mut buf = Zeroizing::new(Vec::new());
    if input == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(SecretsError::io("read", "standard input"))?;
    } else {
        let mut f = std::fs::File::open(input).map_err(SecretsError::io("read", input))?;
        let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
        buf.reserve_exact(len + 1);
        f.read_to_end(&mut buf)
            .map_err(SecretsError::io("read", input))?;
    }
    Ok(Plaintext(buf))
}

/// `hoist secrets open FILE --identity KEY`: the plaintext on standard output.
pub fn open_cmd(file: &Path, identity: &Path) -> Result<(), SecretsError> {
    let identity = Identity::load(identity)?;
    let sealed = std::fs::read(file).map_err(SecretsError::io("read", file))?;
    let plaintext = open(&identity, &file.display().to_string(), &sealed)?;
    let mut out = std::io::stdout().lock();
    out.write_all(plaintext.as_bytes())
        .and_then(|()| out.flush())
        .map_err(SecretsError::io("write", "standard output"))
}

/// `hoist secrets edit FILE --identity KEY [--env ENV [--app APP]]`.
pub fn edit_cmd(
    repo: &ConfigRepo,
    file: &Path,
    identity: &Path,
    environment: Option<&str>,
    app: Option<&str>,
) -> Result<(), SecretsError> {
    let identity = Identity::load(identity)?;
    let recipients = repo::recipients_for_edit(repo, file, environment, app)?;
    warn_hosts_without_key(&recipients, &file.display().to_string());
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_string());
    match repo::edit(file, &identity, &recipients, &editor)? {
        EditOutcome::Unchanged => eprintln!("hoist: {} unchanged; nothing written", file.display()),
        EditOutcome::Resealed(n) => eprintln!(
            "hoist: re-sealed {} to {n} recipient(s): {}",
            file.display(),
            names(&recipients)
        ),
    }
    Ok(())
}

/// `hoist secrets rekey --identity KEY`: Ok(false) when some file could not
/// be re-sealed (the others were).
pub fn rekey_cmd(repo: &ConfigRepo, identity: &Path) -> Result<bool, SecretsError> {
    let identity = Identity::load(identity)?;
    let report = repo::rekey(repo, &identity)?;
    for w in &report.warnings {
        eprintln!("hoist: warning: {w}");
    }
    for (file, what) in &report.resealed {
        println!("{file}: {what}");
    }
    for f in &report.failed {
        eprintln!("hoist: {f}");
    }
    println!(
        "{} re-sealed, {} already sealed to their recipients (left as they are){}",
        report.resealed.len(),
        report.unchanged.len(),
        if report.failed.is_empty() {
            String::new()
        } else {
            format!(", {} failed", report.failed.len())
        }
    );
    Ok(report.failed.is_empty())
}

/// The sealed-secret rules of `hoist check`; prints errors and warnings and
/// returns whether the repo passes them.
pub fn check_cmd(repo: &ConfigRepo, apps: &AppSet) -> bool {
    let report = repo::check(repo, apps);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("{e}");
    }
    report.errors.is_empty()
}
