//! Removing credentials from text before it reaches a log, an error, a status
//! or the history. Secrets are read from files and kept in memory only; the
//! one place they can leak into text is a URL with userinfo or a token in a
//! query string, which this module strips.

/// A URL as it may be shown: any `user:password@` part removed, a query
/// string (where presigned URLs keep their signature) replaced by
/// `?[redacted]`, a fragment dropped. Not parsed, so anything that looks
/// like a URL is cut the same way, a malformed one too; text without
/// `://` (a path, `git@host:repo`) is shown as it is.
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
    let mut hidden = "";
    if let Some(q) = path.find(['?', '#']) {
        if path[q..].starts_with('?') {
            hidden = "?[redacted]";
        }
        path = &path[..q];
    }
    format!("{scheme}{host}{path}{hidden}")
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
        assert_eq!(
            url("https://tok@host:8443/a?b=c#d"),
            "https://host:8443/a?[redacted]"
        );
        assert_eq!(url("https://host/a#frag"), "https://host/a");
        assert_eq!(url("https://u:p@[bad/x?q"), "https://[bad/x?[redacted]");
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
