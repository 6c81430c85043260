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

/// This server as the inventory should list it: what `hoist keygen`
/// prints to paste (from the host config, when one loads).
#[derive(Debug, Clone)]
pub struct ThisHost {
    pub host: String,
    pub environment: String,
    /// The host config's labels; None when no host config could be read.
    pub labels: Option<Vec<String>>,
}

/// The inventory entry for `host` with the key `public`: its labels are
/// the host config's, since an entry without labels is refused while an
/// app targets labels.
pub fn inventory_entry(host: &ThisHost, public: &str) -> String {
    let labels = host.labels.as_deref().unwrap_or_default();
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let list: Vec<String> = labels
        .iter()
        .map(|l| {
            if !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                l.clone()
            } else {
                quoted(l)
            }
        })
        .collect();
    format!(
        "  {}: {{ labels: [{}], key: {} }}",
        host.host,
        list.join(", "),
        quoted(public)
    )
}

/// `hoist keygen -o FILE`: prints the new public key on standard output,
/// and on standard error the inventory entry to paste for this server.
pub fn keygen_cmd(path: &Path, host: &ThisHost) -> Result<(), SecretsError> {
    let public = keygen(path)?;
    println!("{public}");
    let file = crate::config::inventory_path(&host.environment);
    let note = if host.labels.is_none() {
        " (no host config was read, so give it this server's labels)"
    } else {
        ""
    };
    eprintln!(
        "hoist: wrote {} (mode 0600); add this server under `hosts:` in {}{note}:\n{}\nthen run `hoist secrets rekey`",
        path.display(),
        file.display(),
        inventory_entry(host, &public)
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

/// `hoist secrets edit FILE --identity KEY [--env ENV [--app APP]]`. The
/// private copy is removed when the editor is done, and also when the
/// command is stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP (a closed
/// terminal) while the editor runs; the editor is stopped with it. A copy
/// left by a `kill -9` is removed by the next `hoist secrets edit`.
pub async fn edit_cmd(
    repo: &ConfigRepo,
    file: &Path,
    identity: &Path,
    environment: Option<&str>,
    app: Option<&str>,
) -> Result<(), SecretsError> {
    use tokio::signal::unix::{SignalKind, signal};
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
    // Listening before the plaintext exists: from here on these signals
    // no longer end the process before it removes the copy.
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| SecretsError::Edit(format!("cannot listen for signals: {e}")))
    };
    let (mut int, mut term, mut hup) = (
        listen(SignalKind::interrupt())?,
        listen(SignalKind::terminate())?,
        listen(SignalKind::hangup())?,
    );
    let session = repo::EditSession::begin(repo, file, &identity, &recipients)?;
    let mut child = tokio::process::Command::from(repo::editor_command(&editor, session.path()))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SecretsError::Edit(format!("cannot run the editor {editor:?}: {e}")))?;
    let stopped_by = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| SecretsError::Edit(format!("cannot wait for the editor {editor:?}: {e}")))?;
            if !status.success() {
                drop(session);
                return Err(SecretsError::Edit(format!(
                    "the editor {editor:?} exited with {status}; {} was left as it was",
                    file.display()
                )));
            }
            None
        }
        _ = int.recv() => Some("SIGINT"),
        _ = term.recv() => Some("SIGTERM"),
        _ = hup.recv() => Some("SIGHUP"),
    };
    if let Some(sig) = stopped_by {
        let _ = child.start_kill();
        let _ = child.wait().await;
        drop(session);
        return Err(SecretsError::Edit(format!(
            "stopped by {sig}: the plaintext copy was removed and {} was left as it was",
            file.display()
        )));
    }
    match session.finish(repo, &recipients)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_to_paste_carries_the_labels_and_parses_as_an_inventory() {
        let host = ThisHost {
            host: "web-1".into(),
            environment: "production".into(),
            labels: Some(vec!["web".into(), "eu-west".into(), "a b".into()]),
        };
        let key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";
        let entry = inventory_entry(&host, key);
        assert_eq!(
            entry,
            format!("  web-1: {{ labels: [web, eu-west, \"a b\"], key: \"{key}\" }}")
        );
        let text = format!("hosts:\n{entry}\n");
        let (_, inv) =
            crate::config::parse_inventory(Path::new("fleet/production.yaml"), &text).unwrap();
        assert_eq!(inv.labels_of("web-1").unwrap(), ["web", "eu-west", "a b"]);
        assert!(crate::config::hosts_without_labels(&text).is_empty());
        // Without a host config: an empty list, still an explicit one.
        let bare = ThisHost {
            labels: None,
            ..host
        };
        assert!(inventory_entry(&bare, key).contains("labels: []"));
    }
}
