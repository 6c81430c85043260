//! Small validated value types shared by the host config and the manifests.
//!
//! Each validates inside its serde visitor, while the parser still holds
//! the value's position, so a bad value is reported at its own line.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::time::Duration;

/// A duration written as `500ms`, `15s`, `2m` or `1h 30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration; write it like 500ms, 15s or 2m".into());
        }
        if s == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        humantime::parse_duration(s)
            .map(Dur)
            .map_err(|_| format!("invalid duration {s:?}; write it like 500ms, 15s or 2m"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseStr {
            parse: Dur::parse,
            expecting: "a duration like 15s",
        })
    }
}

/// A visitor that parses a string with `parse`. Refusing the value inside
/// the visitor (rather than after `String::deserialize`) is what lets
/// serde_norway attach the value's own line to the error.
struct ParseStr<T> {
    parse: fn(&str) -> Result<T, String>,
    expecting: &'static str,
}

impl<'de, T> de::Visitor<'de> for ParseStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A size in bytes written as `4GiB`, `512MiB`, `64KiB`, `10MB` or a plain
/// number of bytes. Binary (`KiB`, `MiB`, `GiB`, `TiB`) and decimal (`KB`,
/// `MB`, `GB`, `TB`) units; a bare `K`/`M`/`G`/`T` is binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let bad = || format!("invalid size {t:?}; write it like 4GiB, 512MiB or 100000");
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            "T" | "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl de::Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like 4GiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                ByteSize::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: &str) -> Result<$name, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(s)?;
                Ok($name(s.to_string()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(ParseStr {
                    parse: $name::new,
                    expecting: "a string",
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_string!(
    /// An app name: `[a-z0-9][a-z0-9_-]{0,63}`, the stem of its manifest file.
    AppName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || (i > 0 && (b == b'_' || b == b'-'))
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid app name {s:?}: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
            ))
        }
    }
);

checked_string!(
    /// An environment name: `[a-z0-9][a-z0-9_-]{0,63}` (SPEC §7); it names
    /// the inventory `fleet/<environment>.yaml` and fills `{environment}` in
    /// a secret's `from`.
    EnvName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || (i > 0 && (b == b'_' || b == b'-'))
            });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid environment name {s:?}: use 1 to 64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
            ))
        }
    }
);

checked_string!(
    /// A release name: `[A-Za-z0-9._-]{1,64}`, never `.` or `..`; it names a directory.
    ReleaseName,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s != "."
            && s != ".."
            && s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid release {s:?}: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-' (not \".\" or \"..\")"
            ))
        }
    }
);

checked_string!(
    /// A sha256 digest as 64 lowercase hex digits (upper case is accepted and folded).
    Sha256,
    |s| {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!(
                "invalid sha256 {s:?}: expected 64 hexadecimal digits"
            ))
        }
    }
);

impl Sha256 {
    pub fn lower(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

checked_string!(
    /// A path inside a release that is replaced by a link into `shared/`:
    /// relative, no `..`, no empty parts; a trailing `/` marks a directory.
    SharedPath,
    |s| {
        let body = s.strip_suffix('/').unwrap_or(s);
        let ok = !body.is_empty()
            && !body.starts_with('/')
            && body
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid shared path {s:?}: use a relative path inside the release without '..', like .env or uploads/"
            ))
        }
    }
);

impl SharedPath {
    /// The path without its trailing slash.
    pub fn rel(&self) -> &str {
        self.0.strip_suffix('/').unwrap_or(&self.0)
    }
    /// Whether the user marked it as a directory (`uploads/`).
    pub fn is_dir(&self) -> bool {
        self.0.ends_with('/')
    }
}

/// Checks a glob on host names: the characters of a host name (letters,
/// digits, `.`, `-`, `_`) and the wildcards `*` and `?`. Anything else
/// (`[12]`, `{a,b}`, a space) is refused rather than silently matching no
/// server, since `glob_match` knows only `*` and `?`. The message follows
/// the key that holds the pattern.
pub fn check_host_glob(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("is an empty pattern".into());
    }
    match pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*' | '?')))
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "{pattern:?} is not a host glob ({c:?} is neither part of a host name nor a wildcard); use letters, digits, '.', '-', '_' and the wildcards * and ?"
        )),
    }
}

/// Shell-style glob match supporting `*` (any run, possibly empty) and `?`
/// (one character). Host names are short, so the simple backtracking is fine.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("500ms").unwrap().0, Duration::from_millis(500));
        assert_eq!(Dur::parse("15s").unwrap().0, Duration::from_secs(15));
        assert_eq!(Dur::parse("2m").unwrap().0, Duration::from_secs(120));
        assert_eq!(Dur::parse("0s").unwrap().0, Duration::ZERO);
        assert_eq!(Dur::parse("0").unwrap().0, Duration::ZERO);
        assert!(Dur::parse("15").is_err());
        assert!(Dur::parse("fast").is_err());
        assert!(Dur::parse("").is_err());
    }

    #[test]
    fn app_names() {
        for ok in ["web", "a", "api-2", "x_y", "0web"] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Web",
            "-web",
            "_x",
            "we b",
            "web.yaml",
            "../x",
            long.as_str(),
        ] {
            assert!(AppName::new(bad).is_err(), "{bad}");
        }
        assert!(AppName::new(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn release_names() {
        for ok in ["2026.11.27-3", "v1", "A_b-c.d", ".hidden"] {
            assert!(ReleaseName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "v 1", "ü"] {
            assert!(ReleaseName::new(bad).is_err(), "{bad}");
        }
        assert!(ReleaseName::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn sha256s() {
        assert!(Sha256::new(&"a".repeat(64)).is_ok());
        assert_eq!(
            Sha256::new(&"A".repeat(64)).unwrap().lower(),
            "a".repeat(64)
        );
        assert!(Sha256::new("abc").is_err());
        assert!(Sha256::new(&"g".repeat(64)).is_err());
    }

    #[test]
    fn shared_paths() {
        let d = SharedPath::new("uploads/").unwrap();
        assert!(d.is_dir());
        assert_eq!(d.rel(), "uploads");
        let f = SharedPath::new("config/.env").unwrap();
        assert!(!f.is_dir());
        for bad in ["/etc/passwd", "../x", "a/../b", "", "/", "a//b", "./a"] {
            assert!(SharedPath::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_globs_are_checked() {
        for ok in ["web-*", "*", "w?b-1.eu_2", "WEB-1"] {
            assert!(check_host_glob(ok).is_ok(), "{ok}");
        }
        for bad in ["", "web-[12]", "{a,b}", "web 1", "web/1", "!web"] {
            assert!(check_host_glob(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("web-*", "web-"));
        assert!(!glob_match("web-*", "db-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("w?b-*-eu", "web-12-eu"));
        assert!(!glob_match("w?b", "wb"));
        assert!(glob_match("*-1", "web-db-1"));
        assert!(!glob_match("web", "web-1"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
