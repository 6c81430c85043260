//! Where a key is in a YAML file, by the parser's own positions.
//!
//! serde_norway locates every error it raises while it deserializes a value
//! (a wrong type, an unknown key, a bad value refused by one of the value
//! types). Two kinds of error have no position of their own: a check made
//! after parsing (two keys that disagree, a process name used twice), and a
//! key written twice, which serde's derived structs report at the mapping
//! that holds it. Both are answered here by walking the document again with
//! serde_norway and failing on purpose at the key in question: the error
//! serde_norway returns then carries that key's line. No text is searched,
//! so a value that also appears elsewhere in the file, a comment or a flow
//! mapping cannot mislead it.
//!
//! `find_duplicate` walks every file before it is deserialized (hoist's own
//! files are small); `line_of` runs only when there is an error to report.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// One step of a path into a YAML document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A path written the way messages name keys: `repo.url`, `pm2[0].name`.
/// Keys that contain a dot or a bracket (a host name in an inventory) are
/// given as `Seg`s instead.
pub fn path(dotted: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in dotted.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(close) = rest.find(']') {
            if let Ok(i) = rest[1..close].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// Marks the error raised on purpose, told apart from a real one.
const FOUND: &str = "\u{0}hoist: found";

/// The 1-based line of the key at `path` (of the element, when the path
/// ends with an index); None when the document has no such key.
pub fn line_of(text: &str, path: &[Seg]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let de = serde_norway::Deserializer::from_str(text);
    match Find(path).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| l.line()),
        _ => None,
    }
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key as messages name it (`repo.url`, `pm2[0].env.PORT`).
    pub key: String,
    /// The line of the second occurrence.
    pub line: usize,
    /// The line of the first.
    pub first_line: Option<usize>,
}

/// The first key written twice in one mapping, anywhere in the document.
/// YAML forbids it, and serde would otherwise either report it at the
/// enclosing mapping or (in free-form mappings such as a pm2 `env`) keep the
/// last value without a word.
pub fn find_duplicate(text: &str) -> Option<Duplicate> {
    let found = RefCell::new(None);
    let de = serde_norway::Deserializer::from_str(text);
    let err = DupWalk {
        at: Vec::new(),
        found: &found,
    }
    .deserialize(de)
    .err()?;
    let at: Vec<OwnedSeg> = found.into_inner()?;
    let segs: Vec<Seg> = at.iter().map(OwnedSeg::as_seg).collect();
    Some(Duplicate {
        key: dotted(&at),
        line: err.location()?.line(),
        first_line: line_of(text, &segs),
    })
}

#[derive(Clone, Debug)]
enum OwnedSeg {
    Key(String),
    Index(usize),
}

impl OwnedSeg {
    fn as_seg(&self) -> Seg<'_> {
        match self {
            OwnedSeg::Key(k) => Seg::Key(k),
            OwnedSeg::Index(i) => Seg::Index(*i),
        }
    }
}

fn dotted(at: &[OwnedSeg]) -> String {
    let mut s = String::new();
    for seg in at {
        match seg {
            OwnedSeg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            OwnedSeg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Walks to `path` and fails there.
struct Find<'p>(&'p [Seg<'p>]);

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FindVisitor(self.0))
    }
}

struct FindVisitor<'p>(&'p [Seg<'p>]);

macro_rules! scalars_are_not_it {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

impl<'de> Visitor<'de> for FindVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    scalars_are_not_it!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let last = rest.is_empty();
        while let Some(hit) = map.next_key_seed(KeyIs { want, fail: last })? {
            if hit {
                map.next_value_seed(Find(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        let mut i = 0;
        loop {
            let more = if i == *want {
                if rest.is_empty() {
                    seq.next_element_seed(FailHere)?
                } else {
                    seq.next_element_seed(Find(rest))?
                }
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Deserializes a key and says whether it is `want`; with `fail`, a match
/// is the error that carries the key's position.
struct KeyIs<'w> {
    want: &'w str,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // The decision is made inside the visitor: only an error raised
        // there gets the key's own position from serde_norway.
        d.deserialize_any(KeyThen(|key: Option<String>| {
            let hit = key.as_deref() == Some(self.want);
            if hit && self.fail {
                Err(FOUND.to_string())
            } else {
                Ok(hit)
            }
        }))
    }
}

/// Fails at whatever value comes: that value's position is the answer.
struct FailHere;

impl<'de> DeserializeSeed<'de> for FailHere {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FailVisitor)
    }
}

struct FailVisitor;

impl<'de> Visitor<'de> for FailVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// A mapping key as text (YAML keys may be numbers or booleans too), None
/// for a key that is itself a mapping or a list (which hoist never uses),
/// handed to `F` inside the visitor.
struct KeyThen<F>(F);

impl<'de, F, R> Visitor<'de> for KeyThen<F>
where
    F: FnOnce(Option<String>) -> Result<R, String>,
{
    type Value = R;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<R, E> {
        (self.0)(Some(v.to_string())).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<R, E> {
        (self.0)(Some(v.to_string())).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<R, E> {
        (self.0)(Some(v.to_string())).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<R, E> {
        (self.0)(Some(v.to_string())).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<R, E> {
        (self.0)(Some(v.to_string())).map_err(E::custom)
    }
    fn visit_unit<E: de::Error>(self) -> Result<R, E> {
        (self.0)(Some("null".into())).map_err(E::custom)
    }
    fn visit_none<E: de::Error>(self) -> Result<R, E> {
        (self.0)(Some("null".into())).map_err(E::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<R, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        (self.0)(None).map_err(de::Error::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<R, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        (self.0)(None).map_err(de::Error::custom)
    }
}

/// Walks the whole document; a key seen twice in one mapping fails at its
/// second occurrence, and its path is left in `found`.
struct DupWalk<'f> {
    at: Vec<OwnedSeg>,
    found: &'f RefCell<Option<Vec<OwnedSeg>>>,
}

impl<'de> DeserializeSeed<'de> for DupWalk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    scalars_are_not_it!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(NewKey {
            seen: &mut seen,
            at: &self.at,
            found: self.found,
        })? {
            let mut at = self.at.clone();
            at.push(OwnedSeg::Key(key.unwrap_or_default()));
            map.next_value_seed(DupWalk {
                at,
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let mut at = self.at.clone();
            at.push(OwnedSeg::Index(i));
            let seed = DupWalk {
                at,
                found: self.found,
            };
            if seq.next_element_seed(seed)?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// A key that must not have been seen in its mapping yet.
struct NewKey<'s> {
    seen: &'s mut HashSet<String>,
    at: &'s [OwnedSeg],
    found: &'s RefCell<Option<Vec<OwnedSeg>>>,
}

impl<'de> DeserializeSeed<'de> for NewKey<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(KeyThen(|key: Option<String>| {
            let Some(key) = key else { return Ok(None) };
            if self.seen.insert(key.clone()) {
                return Ok(Some(key));
            }
            let mut at = self.at.to_vec();
            at.push(OwnedSeg::Key(key));
            *self.found.borrow_mut() = Some(at);
            Err("duplicate key".to_string())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# a comment naming url: and web
repo:
  url: https://example.com/x.git   # url: again
  branch: main
pm2:
  - name: web
    env: { PORT: \"3000\", url: x }
  -
    name: api
    script: api.js
hosts:
  web-1.example.com: { labels: [a] }
";

    #[test]
    fn paths_are_found_at_their_own_line() {
        assert_eq!(line_of(DOC, &path("repo")), Some(2));
        assert_eq!(line_of(DOC, &path("repo.url")), Some(3));
        assert_eq!(line_of(DOC, &path("repo.branch")), Some(4));
        assert_eq!(line_of(DOC, &path("pm2[0]")), Some(6));
        assert_eq!(line_of(DOC, &path("pm2[0].env.url")), Some(7));
        assert_eq!(line_of(DOC, &path("pm2[1].name")), Some(9));
        assert_eq!(line_of(DOC, &path("pm2[1].script")), Some(10));
        let host = [Seg::Key("hosts"), Seg::Key("web-1.example.com")];
        assert_eq!(line_of(DOC, &host), Some(12));
        assert_eq!(line_of(DOC, &path("repo.nope")), None);
        assert_eq!(line_of(DOC, &path("pm2[7]")), None);
        assert_eq!(line_of("a: [unclosed\nnot: 1\n", &path("not")), None);
    }

    #[test]
    fn dotted_paths_parse() {
        assert_eq!(
            path("pm2[0].env.PORT"),
            vec![
                Seg::Key("pm2"),
                Seg::Index(0),
                Seg::Key("env"),
                Seg::Key("PORT")
            ]
        );
        assert_eq!(
            path("hooks.before_activate[2]"),
            vec![
                Seg::Key("hooks"),
                Seg::Key("before_activate"),
                Seg::Index(2)
            ]
        );
    }

    #[test]
    fn duplicates_are_found_anywhere_with_both_lines() {
        assert_eq!(find_duplicate(DOC), None);
        let d = find_duplicate("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n").unwrap();
        assert_eq!((d.key.as_str(), d.line, d.first_line), ("b.c", 5, Some(3)));
        let d = find_duplicate("pm2:\n  - name: a\n    env: { X: 1, X: 2 }\n").unwrap();
        assert_eq!(
            (d.key.as_str(), d.line, d.first_line),
            ("pm2[0].env.X", 3, Some(3))
        );
        let d = find_duplicate("x: 1\ny: 2\nx: 3\n").unwrap();
        assert_eq!((d.key.as_str(), d.line, d.first_line), ("x", 3, Some(1)));
        // The same key in two different mappings is no duplicate.
        assert_eq!(find_duplicate("a: {x: 1}\nb: {x: 1}\n"), None);
    }
}
