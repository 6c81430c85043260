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

/// `text` without terminal escape sequences (ANSI colours, cursor moves:
/// `ESC [ ... letter`, `ESC ] ... BEL`) and without any other control
/// character but newlines, which become line ends; tabs become spaces.
/// What a tool such as pm2 prints for a terminal can then go into a commit
/// status, the history or a log line as plain text.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // Any other escape: the escape and the one character after it.
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' => out.push('\n'),
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_escapes_and_control_characters() {
        let pm2 = "\u{1b}[31m[PM2][ERROR]\u{1b}[39m File /srv/hoist/.ecosystems/web.json not found\r\n\u{1b}]0;title\u{7}ok\tdone\u{0}\u{7f}";
        assert_eq!(
            printable(pm2),
            "[PM2][ERROR] File /srv/hoist/.ecosystems/web.json not found\nok done"
        );
        assert!(printable(pm2).chars().all(|c| c == '\n' || !c.is_control()));
        assert_eq!(printable("web 1.2.0 live"), "web 1.2.0 live");
        assert_eq!(printable("\u{1b}"), "");
    }

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
