//! Removing credentials from text before it reaches a log, an error, a status
//! or the history. Secrets are read from files and kept in memory only; the
//! one place they can leak into text is a URL with userinfo or a token in a
//! query string, which this module strips.

/// A URL with any `user:password@` part and any query string removed.
pub fn url(u: &str) -> String {
    let (scheme, rest) = match u.find("://") {
        Some(i) => (&u[..i + 3], &u[i + 3..]),
        None => return u.to_string(),
    };
    let (authority_end, _) = rest
        .char_indices()
        .find(|(_, c)| *c == '/' || *c == '?' || *c == '#')
        .unwrap_or((rest.len(), ' '));
    let authority = &rest[..authority_end];
    let host = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    let mut path = &rest[authority_end..];
    if let Some(q) = path.find(['?', '#']) {
        path = &path[..q];
    }
    format!("{scheme}{host}{path}")
}

/// `text` with every occurrence of each secret replaced by `***`.
pub fn secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_userinfo_and_query() {
        assert_eq!(url("https://u:p@host/x.git"), "https://host/x.git");
        assert_eq!(url("https://tok@host:8443/a?b=c"), "https://host:8443/a");
        assert_eq!(url("s3://bucket/key"), "s3://bucket/key");
        assert_eq!(url("/local/path"), "/local/path");
        assert_eq!(url("https://host"), "https://host");
    }

    #[test]
    fn masks_secrets() {
        assert_eq!(secrets("a hunter22 b", &["hunter22"]), "a *** b");
        assert_eq!(secrets("abc", &[""]), "abc");
    }
}

/// Logs a warning for each secret file of the host config that users other
/// than its owner may read: hoist still starts (refusing would take a server
/// down over a chmod), but the operator is told what to fix. Called once at
/// start.
pub fn warn_about_exposed_secrets(cfg: &crate::config::HostConfig) {
    let mut files = vec![
        ("repo.token_file", &cfg.repo.token_file),
        ("repo.ssh_key_file", &cfg.repo.ssh_key_file),
        ("status.token_file", &cfg.status.token_file),
        ("webhook_secret_file", &cfg.webhook_secret_file),
    ];
    if let Some(s3) = &cfg.storage.s3 {
        files.push(("storage.s3.access_key_id_file", &s3.access_key_id_file));
        files.push((
            "storage.s3.secret_access_key_file",
            &s3.secret_access_key_file,
        ));
    }
    for (key, path) in files {
        let Some(path) = path else { continue };
        if let Some(mode) = exposed_mode(path) {
            tracing::warn!(
                "{key} {} can be read by other users (mode {:o}); run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
}

/// The file's mode when group or others may read it.
fn exposed_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod exposed_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_files_readable_by_others_are_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "t").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_mode(&f), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(exposed_mode(&f).is_some());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(exposed_mode(&f).is_some());
        assert_eq!(exposed_mode(&dir.path().join("missing")), None);
    }
}
