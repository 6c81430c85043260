//! Rewriting a manifest's `release` and `artifact` in place, for `hoist publish`
//! and `hoist demo`.
//!
//! Manifests live in a config repository that people read, review and edit.
//! A round-trip through a YAML parser would drop their comments, reorder
//! keys and change quoting, turning a one-line release bump into a noisy
//! diff. So this module edits the text line by line, and only in the layout
//! that SPEC §2, the docs and `example-repo/` show:
//!
//! ```yaml
//! release: "2026.11.27-3"        # a top-level key, its value on its line
//! artifact:                      # a block mapping under it...
//!   url: s3://acme-releases/web/web-2026.11.27-3.tar.zst
//!   sha256: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
//! ```
//!
//! Any other way of writing these three values (a flow mapping
//! `artifact: { ... }`, a value spread over several lines, an anchor, an
//! alias or a tag) is refused with an [`EditError`] that names the line and
//! says what to write instead; nothing else in the file matters. Missing
//! keys are inserted; every byte that need not change stays as it was, and
//! inserted lines follow the file's line endings and indentation. Why not a
//! lossless YAML editor crate: docs/architecture.md, "Decisions where the
//! contract is silent".
//!
//! As a last guard the result is parsed back and compared with the original:
//! the three values must read exactly as written and every other value must
//! be unchanged, otherwise the edit is refused.

use thiserror::Error;

/// Why a manifest could not be rewritten. Line numbers are 1-based and refer
/// to the text that was passed in.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EditError {
    #[error("release name {0:?} is not valid: use 1 to 64 letters, digits, '.', '_' or '-'")]
    InvalidRelease(String),
    #[error("sha256 {0:?} is not valid: expected 64 hexadecimal digits")]
    InvalidSha256(String),
    #[error("the artifact URL is empty or contains whitespace or control characters")]
    InvalidUrl,
    #[error("the manifest is not valid YAML: {0}")]
    NotYaml(String),
    #[error("line {line}: `{key}` is not a mapping; it must hold the keys `url` and `sha256`")]
    NotAMapping { key: String, line: usize },
    #[error("line {line}: `{key}` holds a list or a mapping where a single value belongs")]
    NotAScalar { key: String, line: usize },
    #[error("line {line}: {reason}")]
    Unsupported { line: usize, reason: String },
    #[error("the manifest could not be rewritten safely ({0}); set release and artifact by hand")]
    Unsafe(String),
}

/// Sets the top-level `release` and the `artifact.url` / `artifact.sha256`
/// of a manifest, keeping everything else byte for byte.
///
/// `release` is always written double-quoted. `url` and `sha256` keep the
/// quoting style of the values they replace, falling back to double quotes
/// when a plain scalar would not read back as the same string. Missing keys
/// are inserted: `release` before the first top-level key, `artifact` right
/// after `release`, `url` before `sha256` and `sha256` after `url`.
pub fn set_release(
    text: &str,
    release: &str,
    url: &str,
    sha256: &str,
) -> Result<String, EditError> {
    validate_release(release)?;
    let sha256 = validate_sha256(sha256)?;
    if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EditError::InvalidUrl);
    }
    let before = parse_yaml(text).map_err(EditError::NotYaml)?;
    let doc = Doc::split(text);
    let edits = doc.plan(&before, release, url, &sha256)?;
    let out = doc.join(edits);
    check_result(before, &out, release, url, &sha256)?;
    Ok(out)
}

fn validate_release(release: &str) -> Result<(), EditError> {
    let ok = (1..=64).contains(&release.len())
        && release
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(EditError::InvalidRelease(release.to_string()))
    }
}

fn validate_sha256(sha256: &str) -> Result<String, EditError> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(sha256.to_ascii_lowercase())
    } else {
        Err(EditError::InvalidSha256(sha256.to_string()))
    }
}

fn parse_yaml(text: &str) -> Result<serde_norway::Value, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_norway::from_str(text).map_err(|e| e.to_string())
}

/// The parse-back guard described in the module comment.
fn check_result(
    before: serde_norway::Value,
    out: &str,
    release: &str,
    url: &str,
    sha256: &str,
) -> Result<(), EditError> {
    let after = parse_yaml(out)
        .map_err(|e| EditError::Unsafe(format!("the result would not parse: {e}")))?;
    let read = |path: &[&str]| {
        let mut v = &after;
        for key in path {
            v = v.get(*key)?;
        }
        v.as_str()
    };
    for (path, want) in [
        (&["release"][..], release),
        (&["artifact", "url"][..], url),
        (&["artifact", "sha256"][..], sha256),
    ] {
        if read(path) != Some(want) {
            return Err(EditError::Unsafe(format!(
                "`{}` would not read back as written",
                path.join(".")
            )));
        }
    }
    if strip_edited(before) != strip_edited(after) {
        return Err(EditError::Unsafe("other values would change".into()));
    }
    Ok(())
}

/// The document without the three values [`set_release`] owns, so that the
/// rest can be compared before and after an edit.
fn strip_edited(mut doc: serde_norway::Value) -> serde_norway::Value {
    if let Some(top) = doc.as_mapping_mut() {
        top.shift_remove("release");
        let mut artifact_gone = false;
        if let Some(artifact) = top.get_mut("artifact") {
            if let Some(m) = artifact.as_mapping_mut() {
                m.shift_remove("url");
                m.shift_remove("sha256");
                artifact_gone = m.is_empty();
            } else {
                artifact_gone = artifact.is_null();
            }
        }
        if artifact_gone {
            top.shift_remove("artifact");
        }
        if top.is_empty() {
            return serde_norway::Value::Null;
        }
    }
    doc
}

/// One line of the text: its content and its own line ending (`"\n"`,
/// `"\r\n"`, or `""` for a last line without one).
struct Line<'a> {
    body: &'a str,
    eol: &'a str,
}

/// A `key:` at the start of a line (after its indentation).
#[derive(Clone, Copy)]
struct Key {
    line: usize,
    indent: usize,
    /// Byte offset in the line just after the `:`.
    colon: usize,
}

/// How a scalar was quoted, so that its replacement can look the same.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Double,
    Single,
}

/// A one-line scalar after a key's `:`.
struct Value {
    style: Style,
    /// Byte offsets in the line: where the value starts (the `:` offset
    /// when it is empty), just after it, and where a `# comment` starts.
    start: usize,
    end: usize,
    comment: Option<usize>,
}

/// What [`Doc::plan`] decided, by line of the original text: new contents
/// for some lines, and new lines to put before a line (or at the end,
/// index `lines.len()`).
#[derive(Default)]
struct Edits {
    replace: Vec<(usize, String)>,
    insert: Vec<(usize, Vec<String>)>,
}

impl Edits {
    fn insert(&mut self, at: usize, lines: Vec<String>) {
        self.insert.push((at, lines));
    }
}

struct Doc<'a> {
    bom: bool,
    lines: Vec<Line<'a>>,
    /// Line ending for inserted lines: the file's first one.
    eol: &'a str,
}

impl<'a> Doc<'a> {
    fn split(text: &'a str) -> Doc<'a> {
        let (bom, text) = match text.strip_prefix('\u{feff}') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let lines: Vec<Line<'a>> = text
            .split_inclusive('\n')
            .map(|piece| {
                let body = piece.trim_end_matches('\n').trim_end_matches('\r');
                Line {
                    body,
                    eol: &piece[body.len()..],
                }
            })
            .collect();
        let eol = lines
            .iter()
            .map(|l| l.eol)
            .find(|e| !e.is_empty())
            .unwrap_or("\n");
        Doc { bom, lines, eol }
    }

    /// Checks that the three values are written in the layout this module
    /// edits, and decides the edits, before anything changes: line numbers
    /// in errors are those of the text passed in.
    fn plan(
        &self,
        parsed: &serde_norway::Value,
        release: &str,
        url: &str,
        sha256: &str,
    ) -> Result<Edits, EditError> {
        use serde_norway::Value as V;
        let top = match parsed {
            V::Null => None,
            V::Mapping(m) => Some(m),
            _ => {
                return Err(unsupported(
                    self.first_content().unwrap_or(0),
                    "a manifest is a YAML mapping of keys such as `release:` and `artifact:`",
                ));
            }
        };
        let parsed_of = |key: &str| top.and_then(|m| m.get(key));
        let release_key = self.top_key("release");
        let artifact_key = self.top_key("artifact");
        let (url_key, sha_key) = match artifact_key {
            Some(a) => (self.child(a, "url"), self.child(a, "sha256")),
            None => (None, None),
        };
        let line_of =
            |k: Option<Key>, fallback: Option<Key>| k.or(fallback).map_or(1, |k| k.line + 1);
        let is_collection = |v: Option<&V>| match v {
            Some(V::Tagged(t)) => t.value.is_sequence() || t.value.is_mapping(),
            Some(v) => v.is_sequence() || v.is_mapping(),
            None => false,
        };

        // First what the values are, then how they are written.
        if is_collection(parsed_of("release")) {
            return Err(EditError::NotAScalar {
                key: "release".into(),
                line: line_of(release_key, None),
            });
        }
        let artifact = parsed_of("artifact");
        if let Some(a) = artifact
            && !a.is_null()
            && !a.is_mapping()
        {
            return Err(EditError::NotAMapping {
                key: "artifact".into(),
                line: line_of(artifact_key, None),
            });
        }
        for (key, found) in [("url", url_key), ("sha256", sha_key)] {
            if is_collection(artifact.and_then(|a| a.get(key))) {
                return Err(EditError::NotAScalar {
                    key: format!("artifact.{key}"),
                    line: line_of(found, artifact_key),
                });
            }
        }
        for (key, found) in [("release", release_key), ("artifact", artifact_key)] {
            if parsed_of(key).is_some() && found.is_none() {
                return Err(unsupported(
                    self.first_content().unwrap_or(0),
                    &format!(
                        "`{key}` is not written as `{key}:` at the start of a line; \
                         set release and artifact by hand"
                    ),
                ));
            }
        }

        let mut edits = Edits::default();
        let release_line = format!("release: {}", double_quoted(release));
        let after_release = match release_key {
            Some(k) => {
                let value = self.value(k, "release")?;
                edits
                    .replace
                    .push((k.line, self.rewrite(k, &value, &double_quoted(release))));
                k.line + 1
            }
            None => {
                let at = self.first_content().unwrap_or(self.lines.len());
                edits.insert(at, vec![release_line]);
                at
            }
        };
        let ind = " ".repeat(self.guess_indent());
        let new_url = format!("url: {}", render(url, Style::Plain));
        let new_sha = format!("sha256: {}", render(sha256, Style::Plain));
        let Some(a) = artifact_key else {
            let lines = vec![
                "artifact:".into(),
                format!("{ind}{new_url}"),
                format!("{ind}{new_sha}"),
            ];
            edits.insert(after_release, lines);
            return Ok(edits);
        };
        self.artifact_head(a, &mut edits)?;
        let ind = match self.child_indent(a) {
            Some(n) => " ".repeat(n),
            None => ind,
        };
        for (key, found, new) in [("url", url_key, url), ("sha256", sha_key, sha256)] {
            if let Some(k) = found {
                let value = self.value(k, &format!("artifact.{key}"))?;
                edits
                    .replace
                    .push((k.line, self.rewrite(k, &value, &render(new, value.style))));
            }
        }
        match (url_key, sha_key) {
            (Some(_), Some(_)) => {}
            (Some(u), None) => edits.insert(u.line + 1, vec![format!("{ind}{new_sha}")]),
            (None, Some(s)) => edits.insert(s.line, vec![format!("{ind}{new_url}")]),
            (None, None) => edits.insert(
                a.line + 1,
                vec![format!("{ind}{new_url}"), format!("{ind}{new_sha}")],
            ),
        }
        Ok(edits)
    }

    /// The line of `artifact:`: nothing may follow but a comment, or a null
    /// (`~`, `null`) that the keys below will replace.
    fn artifact_head(&self, a: Key, edits: &mut Edits) -> Result<(), EditError> {
        let body = self.lines[a.line].body;
        let rest = body[a.colon..].trim_start_matches([' ', '\t']);
        let (value, comment) = match rest.find(" #").or_else(|| rest.find("\t#")) {
            _ if rest.starts_with('#') => ("", Some(rest)),
            Some(i) => (rest[..i].trim_end(), Some(rest[i..].trim_start())),
            None => (rest.trim_end(), None),
        };
        match value {
            "" => Ok(()),
            "~" | "null" | "Null" | "NULL" => {
                let mut new = body[..a.colon].to_string();
                if let Some(c) = comment {
                    new.push(' ');
                    new.push_str(c);
                }
                edits.replace.push((a.line, new));
                Ok(())
            }
            _ => {
                let what = if value.starts_with('{') {
                    "written in flow style (`artifact: { ... }`)"
                } else {
                    "written with an anchor or a tag"
                };
                Err(unsupported(
                    a.line,
                    &format!(
                        "`artifact` is {what}; hoist rewrites only the block form, `artifact:` \
                         alone on its line with `url:` and `sha256:` on lines of their own below \
                         it: write it so, or set release and artifact by hand"
                    ),
                ))
            }
        }
    }

    /// The one-line scalar value of `k`, or why it is not one.
    fn value(&self, k: Key, path: &str) -> Result<Value, EditError> {
        let body = self.lines[k.line].body;
        let b = body.as_bytes();
        let start =
            k.colon + body[k.colon..].len() - body[k.colon..].trim_start_matches([' ', '\t']).len();
        let refuse = |what: &str| {
            Err(unsupported(
                k.line,
                &format!(
                    "`{path}` is {what}; hoist rewrites only a value written on the line of \
                     its key (`{key}: value`): write it so, or set release and artifact by hand",
                    key = path.rsplit('.').next().unwrap_or(path)
                ),
            ))
        };
        let (style, end) = match b.get(start) {
            None | Some(b'#') => (Style::Plain, k.colon),
            Some(&q @ (b'"' | b'\'')) => match closing_quote(body, start, q) {
                Some(close) if q == b'"' => (Style::Double, close + 1),
                Some(close) => (Style::Single, close + 1),
                None => return refuse("a quoted value spread over several lines"),
            },
            Some(b'{' | b'[') => return refuse("written in flow style"),
            Some(b'|' | b'>') => return refuse("a block scalar spread over several lines"),
            Some(b'&' | b'*' | b'!') => return refuse("written with an anchor, alias or tag"),
            Some(_) => {
                let len = body[start..]
                    .find(" #")
                    .or_else(|| body[start..].find("\t#"))
                    .unwrap_or(body.len() - start);
                (
                    Style::Plain,
                    start + body[start..start + len].trim_end().len(),
                )
            }
        };
        let tail = body[end..].trim_start_matches([' ', '\t']);
        if !tail.is_empty() && !tail.starts_with('#') {
            return refuse("followed by more text on its line");
        }
        if self.continues(k) {
            return refuse("spread over several lines");
        }
        let comment = (!tail.is_empty()).then(|| body.len() - tail.len());
        let start = if end == k.colon { k.colon } else { start };
        Ok(Value {
            style,
            start,
            end,
            comment,
        })
    }

    /// The line of `k` with `new` in place of its value, keeping the
    /// comment after it: in the same column when it was aligned (more than
    /// one space after the value) and still fits, otherwise after the same
    /// spacing as before.
    fn rewrite(&self, k: Key, value: &Value, new: &str) -> String {
        let old = self.lines[k.line].body;
        let mut out = old[..value.start].to_string();
        if value.start == k.colon {
            out.push(' ');
        }
        out.push_str(new);
        if let Some(c) = value.comment {
            let gap = c - value.end;
            let width = |s: &str| s.chars().count();
            let (column, end) = (width(&old[..c]), width(&out));
            let pad = if gap > 1 && column > end {
                column - end
            } else {
                gap.max(1)
            };
            out.push_str(&" ".repeat(pad));
            out.push_str(&old[c..]);
        }
        out
    }

    /// Whether the value of `k` goes on below its line: the next line with
    /// content is indented deeper than the key.
    fn continues(&self, k: Key) -> bool {
        self.lines[k.line + 1..]
            .iter()
            .map(|l| l.body)
            .find(|b| !is_blank(b) && !is_comment(b))
            .is_some_and(|b| indent_of(b) > k.indent)
    }

    /// The line of a top-level `key:`. Another line starting with it can
    /// only be inside a value; editing that one is refused by the guard.
    fn top_key(&self, key: &str) -> Option<Key> {
        (0..self.lines.len()).find_map(|i| self.key_at(i, 0, key))
    }

    /// `key:` among the entries of the block mapping under `parent`.
    fn child(&self, parent: Key, key: &str) -> Option<Key> {
        let indent = self.child_indent(parent)?;
        self.block(parent)
            .filter_map(|i| self.key_at(i, indent, key))
            .next()
    }

    /// The indentation of the first entry under `parent`.
    fn child_indent(&self, parent: Key) -> Option<usize> {
        self.block(parent)
            .map(|i| self.lines[i].body)
            .find(|b| !is_blank(b) && !is_comment(b))
            .map(indent_of)
    }

    /// The lines below `parent` that belong to its value: up to the next
    /// line with content at the parent's indentation or less.
    fn block(&self, parent: Key) -> impl Iterator<Item = usize> + '_ {
        (parent.line + 1..self.lines.len()).take_while(move |&i| {
            let b = self.lines[i].body;
            is_blank(b) || is_comment(b) || indent_of(b) > parent.indent
        })
    }

    /// `key:` at exactly `indent` on line `i`; the key may be quoted and
    /// followed by spaces before its `:`.
    fn key_at(&self, i: usize, indent: usize, key: &str) -> Option<Key> {
        let body = self.lines[i].body;
        if indent_of(body) != indent {
            return None;
        }
        let rest = &body[indent..];
        let after = [format!("\"{key}\""), format!("'{key}'"), key.to_string()]
            .iter()
            .find_map(|k| rest.strip_prefix(k.as_str()))?;
        let after = after.trim_start_matches([' ', '\t']);
        let value = after.strip_prefix(':')?;
        if !(value.is_empty() || value.starts_with([' ', '\t'])) {
            return None;
        }
        Some(Key {
            line: i,
            indent,
            colon: body.len() - value.len(),
        })
    }

    /// The first line holding YAML content (after a header of comments,
    /// blank lines, directives and `---`).
    fn first_content(&self) -> Option<usize> {
        self.lines.iter().position(|l| {
            let b = l.body;
            !(is_blank(b) || is_comment(b) || b.starts_with('%') || is_marker(b))
        })
    }

    /// The indentation the file uses for nested keys (its first indented
    /// line), 2 when it has none.
    fn guess_indent(&self) -> usize {
        self.lines
            .iter()
            .map(|l| l.body)
            .filter(|b| !is_blank(b) && !is_comment(b))
            .map(indent_of)
            .find(|&n| n > 0)
            .unwrap_or(2)
    }

    /// The text with `edits` applied. Inserted lines take the file's line
    /// ending; a missing final line ending stays missing.
    fn join(&self, mut edits: Edits) -> String {
        edits.insert.sort_by_key(|(at, _)| *at);
        let mut bodies: Vec<(String, &str)> = Vec::new();
        let mut inserts = edits.insert.into_iter().peekable();
        for i in 0..=self.lines.len() {
            while let Some((_, lines)) = inserts.next_if(|(at, _)| *at == i) {
                bodies.extend(lines.into_iter().map(|b| (b, self.eol)));
            }
            if let Some(line) = self.lines.get(i) {
                let body = match edits.replace.iter().find(|(at, _)| *at == i) {
                    Some((_, new)) => new.clone(),
                    None => line.body.to_string(),
                };
                bodies.push((body, line.eol));
            }
        }
        // Lines inserted after a last line without an ending: that line
        // gets one, the new last line goes without.
        if let Some(last) = self.lines.last()
            && last.eol.is_empty()
            && let Some(pos) = bodies.iter().rposition(|(_, eol)| eol.is_empty())
            && pos + 1 < bodies.len()
        {
            bodies[pos].1 = self.eol;
            if let Some(end) = bodies.last_mut() {
                end.1 = "";
            }
        }
        let mut out = String::from(if self.bom { "\u{feff}" } else { "" });
        for (body, eol) in bodies {
            out.push_str(&body);
            out.push_str(eol);
        }
        out
    }
}

fn unsupported(line: usize, reason: &str) -> EditError {
    EditError::Unsupported {
        line: line + 1,
        reason: reason.to_string(),
    }
}

fn indent_of(body: &str) -> usize {
    body.len() - body.trim_start_matches(' ').len()
}

fn is_blank(body: &str) -> bool {
    body.trim().is_empty()
}

fn is_comment(body: &str) -> bool {
    body.trim_start().starts_with('#')
}

/// `---` or `...`, alone or before a comment.
fn is_marker(body: &str) -> bool {
    let rest = body
        .strip_prefix("---")
        .or_else(|| body.strip_prefix("..."));
    rest.is_some_and(|r| {
        r.trim().is_empty() || (r.starts_with([' ', '\t']) && r.trim_start().starts_with('#'))
    })
}

/// Byte offset of the quote closing the string that opens at `open`, on the
/// same line.
fn closing_quote(s: &str, open: usize, q: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            c if c == q && q == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 2,
            c if c == q => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// `value` as YAML in `style`, or double-quoted when a plain scalar would
/// not read back as the same string. Values hold no whitespace or control
/// characters (validated), so quoting needs no other escapes.
fn render(value: &str, style: Style) -> String {
    match style {
        Style::Single => format!("'{}'", value.replace('\'', "''")),
        Style::Plain if plain_is_safe(value) => value.to_string(),
        _ => double_quoted(value),
    }
}

fn double_quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether `value` written without quotes reads back as the same string:
/// for the parser that reads manifests, and for YAML 1.1 readers (the tools
/// reviewers may use), which also take `yes`/`no`/`on`/`off` as booleans
/// and anything made of digits (`0000`, `1e5`, `1_000`, `1:20`) as a number.
fn plain_is_safe(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let yaml11_non_string = matches!(lower.as_str(), "y" | "n" | "yes" | "no" | "on" | "off")
        || (lower.bytes().any(|b| b.is_ascii_digit())
            && lower
                .bytes()
                .all(|b| b.is_ascii_digit() || b"._:e+-".contains(&b)));
    !yaml11_non_string
        && matches!(serde_norway::from_str(value), Ok(serde_norway::Value::String(s)) if s == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA_A: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
    const SHA_B: &str = "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c";
    const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    /// The manifest from SPEC §2, comments and all.
    const SPEC_EXAMPLE: &str = r#"release: "2026.11.27-3"        # [A-Za-z0-9._-]{1,64}; names the release directory
artifact:
  url: s3://acme-releases/web/web-2026.11.27-3.tar.zst   # s3://, https://, file://
  sha256: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
  signature_url: s3://acme-releases/web/web-2026.11.27-3.tar.zst.minisig  # optional
targets:                       # which servers run the app; absent = every server
  hosts: ["web-*"]             # globs on the host name (any may match)
  labels: [web]                # the server must have all of these labels
shared: [.env, uploads/]       # paths replaced by links into <root>/<app>/shared/
pm2:                           # pm2 process definitions, as in an ecosystem file's `apps`
  - name: web
    script: server.js
    instances: 2
    exec_mode: cluster
    env: { PORT: "3000", NODE_ENV: production }
health:
  http: http://127.0.0.1:3000/healthz   # optional; must answer 2xx
  timeout: 30s                 # how long the new release has to become healthy
  stable_for: 3s               # processes must stay online, without restarts, this long
hooks:                         # argv lists, run in the new release dir, no shell
  before_activate: [[npm, run, migrate]]
  after_activate: []
keep_releases: 5               # overrides the host's value
paused: false                  # true: hoist leaves this app exactly as it is
"#;

    const NEW_URL: &str = "s3://acme-releases/web/web-2026.12.01-1.tar.zst";

    fn edit(text: &str) -> String {
        set_release(text, "2026.12.01-1", NEW_URL, SHA_B)
            .unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
    }

    /// Lines of `a` and `b` that differ, as (line number, old, new); both
    /// texts must have the same number of lines.
    fn changed_lines<'a>(a: &'a str, b: &'a str) -> Vec<(usize, &'a str, &'a str)> {
        let (la, lb): (Vec<_>, Vec<_>) = (a.split('\n').collect(), b.split('\n').collect());
        assert_eq!(la.len(), lb.len(), "line count changed:\n{a}\n---\n{b}");
        la.iter()
            .zip(&lb)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i + 1, *x, *y))
            .collect()
    }

    fn value(text: &str, path: &[&str]) -> serde_norway::Value {
        let mut v: serde_norway::Value = serde_norway::from_str(text).unwrap();
        for key in path {
            v = v
                .get(*key)
                .unwrap_or_else(|| panic!("no {key} in\n{text}"))
                .clone();
        }
        v
    }

    #[test]
    fn spec_example_changes_only_the_three_values_and_keeps_comments_aligned() {
        let out = edit(SPEC_EXAMPLE);
        assert_eq!(
            changed_lines(SPEC_EXAMPLE, &out),
            vec![
                (
                    1,
                    r#"release: "2026.11.27-3"        # [A-Za-z0-9._-]{1,64}; names the release directory"#,
                    r#"release: "2026.12.01-1"        # [A-Za-z0-9._-]{1,64}; names the release directory"#,
                ),
                (
                    3,
                    "  url: s3://acme-releases/web/web-2026.11.27-3.tar.zst   # s3://, https://, file://",
                    "  url: s3://acme-releases/web/web-2026.12.01-1.tar.zst   # s3://, https://, file://",
                ),
                (
                    4,
                    "  sha256: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b",
                    "  sha256: b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"
                ),
            ]
        );
    }

    #[test]
    fn editing_twice_gives_the_same_text() {
        let once = edit(SPEC_EXAMPLE);
        assert_eq!(edit(&once), once);
    }

    #[test]
    fn four_space_indentation_is_followed() {
        let text = "release: old\nartifact:\n    url: file:///a.tar.zst\n    sha256: \"ab\"\n    signature_url: file:///a.minisig\nhealth:\n    timeout: 10s\n";
        let text = text.replace("\"ab\"", &format!("\"{SHA_A}\""));
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact:\n    url: {NEW_URL}\n    sha256: \"{SHA_B}\"\n    signature_url: file:///a.minisig\nhealth:\n    timeout: 10s\n"
            )
        );
    }

    #[test]
    fn missing_sha256_is_inserted_after_url_with_the_mapping_indentation() {
        let text = "release: \"1\"\nartifact:\n    url: file:///a.tar.zst   # where\n    signature_url: file:///a.minisig\npaused: false\n";
        let out = edit(text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact:\n    url: {NEW_URL}   # where\n    sha256: {SHA_B}\n    signature_url: file:///a.minisig\npaused: false\n"
            )
        );
    }

    #[test]
    fn missing_url_is_inserted_before_sha256() {
        let text =
            format!("release: \"1\"\nartifact:\n  # the tarball's hash\n  sha256: {SHA_A}\n");
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact:\n  # the tarball's hash\n  url: {NEW_URL}\n  sha256: {SHA_B}\n"
            )
        );
    }

    #[test]
    fn missing_release_goes_before_the_first_key_after_the_header() {
        let text = format!(
            "# web: the storefront\n\nartifact:\n  url: file:///a\n  sha256: {SHA_A}\npaused: false\n"
        );
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "# web: the storefront\n\nrelease: \"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}\npaused: false\n"
            )
        );
    }

    #[test]
    fn missing_artifact_goes_right_after_release_using_the_file_indentation() {
        let text = "release: \"1\"   # the version\n\n# health gate\nhealth:\n   timeout: 5s\n";
        let out = edit(text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"   # the version\nartifact:\n   url: {NEW_URL}\n   sha256: {SHA_B}\n\n# health gate\nhealth:\n   timeout: 5s\n"
            )
        );
    }

    #[test]
    fn empty_or_comment_only_text_gets_both_keys() {
        assert_eq!(
            edit(""),
            format!("release: \"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}\n")
        );
        assert_eq!(
            edit("# nothing yet\n"),
            format!(
                "# nothing yet\nrelease: \"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}\n"
            )
        );
    }

    #[test]
    fn empty_and_null_artifact_are_filled_in() {
        let out = edit("release: \"1\"\nartifact:   # soon\npaused: true\n");
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact:   # soon\n  url: {NEW_URL}\n  sha256: {SHA_B}\npaused: true\n"
            )
        );
        let out = edit("release: \"1\"\nartifact: ~ # soon\n");
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact: # soon\n  url: {NEW_URL}\n  sha256: {SHA_B}\n"
            )
        );
    }

    #[test]
    fn flow_style_artifact_is_refused_with_the_form_to_write_instead() {
        for text in [
            format!(
                "release: \"1\"\nartifact: {{ url: file:///a.tar.zst, sha256: \"{SHA_A}\" }}  # one line\npaused: false\n"
            ),
            "release: \"1\"\nartifact: {}\n".to_string(),
            format!("release: \"1\"\nartifact: {{\n  url: a,\n  sha256: {SHA_A}\n}}\n"),
        ] {
            let err = set_release(&text, "v1", "file:///b", SHA_B).unwrap_err();
            assert!(
                matches!(err, EditError::Unsupported { line: 2, .. }),
                "{err}\n{text}"
            );
            let msg = err.to_string();
            assert!(msg.contains("flow style"), "{msg}");
            assert!(msg.contains("`artifact:` alone on its line"), "{msg}");
            assert!(msg.contains("by hand"), "{msg}");
        }
    }

    #[test]
    fn release_keys_inside_other_mappings_and_text_are_not_touched() {
        let text = format!(
            "# release: commented out\nmeta:\n  release: nested\n  notes: |\n    release: inside a block scalar\npm2:\n  - name: web\n    env: {{ release: x }}\nrelease: \"1\"\nartifact:\n  release: not-this-one\n  url: file:///a\n  sha256: {SHA_A}\n"
        );
        let out = edit(&text);
        let changed: Vec<usize> = changed_lines(&text, &out).iter().map(|c| c.0).collect();
        assert_eq!(changed, vec![9, 12, 13]);
        assert_eq!(value(&out, &["meta", "release"]).as_str(), Some("nested"));
        assert_eq!(
            value(&out, &["artifact", "release"]).as_str(),
            Some("not-this-one")
        );
    }

    #[test]
    fn crlf_line_endings_are_kept_and_used_for_new_lines() {
        let text =
            "release: \"1\"\r\n# comment\r\nartifact:\r\n  url: file:///a\r\npaused: false\r\n";
        let out = edit(text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\r\n# comment\r\nartifact:\r\n  url: {NEW_URL}\r\n  sha256: {SHA_B}\r\npaused: false\r\n"
            )
        );
    }

    #[test]
    fn a_missing_final_newline_stays_missing() {
        let out = edit(&format!("artifact:\n  url: a\n  sha256: {SHA_A}"));
        assert_eq!(
            out,
            format!("release: \"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}")
        );
        let out = edit("release: \"1\"");
        assert_eq!(
            out,
            format!("release: \"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}")
        );
    }

    #[test]
    fn byte_order_mark_is_kept() {
        let out = edit(&format!(
            "\u{feff}release: \"1\"\nartifact:\n  url: a\n  sha256: {SHA_A}\n"
        ));
        assert!(
            out.starts_with("\u{feff}release: \"2026.12.01-1\"\n"),
            "{out:?}"
        );
    }

    #[test]
    fn quoting_style_of_the_old_values_is_kept() {
        let text = format!("release: '1'\nartifact:\n  url: 'file:///a'\n  sha256: \"{SHA_A}\"\n");
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact:\n  url: '{NEW_URL}'\n  sha256: \"{SHA_B}\"\n"
            )
        );
    }

    #[test]
    fn values_that_would_not_read_back_as_strings_are_double_quoted() {
        let text = format!("release: \"1\"\nartifact:\n  url: file:///a\n  sha256: {SHA_A}\n");
        let out = set_release(&text, "1.0", "https://example.com/a #1.tar.zst", ZEROS).unwrap_err();
        assert_eq!(out, EditError::InvalidUrl, "whitespace in a URL is refused");
        let out = set_release(&text, "1.0", "file:///x#frag", ZEROS).unwrap();
        assert_eq!(
            out,
            format!("release: \"1.0\"\nartifact:\n  url: file:///x#frag\n  sha256: \"{ZEROS}\"\n")
        );
        let digits_and_e = "1234567890123456789012345678901234567890123456789012345678901e23";
        let out = set_release(&text, "1.0", "file:///x", digits_and_e).unwrap();
        assert!(
            out.contains(&format!("sha256: \"{digits_and_e}\"")),
            "{out}"
        );
        assert_eq!(
            value(&out, &["artifact", "sha256"]).as_str(),
            Some(digits_and_e)
        );
    }

    #[test]
    fn uppercase_sha256_is_written_in_lowercase() {
        let out = set_release("", "v1", "file:///a", &SHA_A.to_uppercase()).unwrap();
        assert!(out.contains(SHA_A), "{out}");
    }

    #[test]
    fn values_spread_over_several_lines_are_refused() {
        for (text, line, key) in [
            ("release: >-\n  2026.01.01-1\n".to_string(), 1, "`release`"),
            (
                "release: \"1\"\nartifact:\n  url:\n    file:///a\n".to_string(),
                3,
                "`artifact.url`",
            ),
            (
                "release: \"1\"\nartifact:\n  url: file:///a\n    /b.tar.zst\n".to_string(),
                3,
                "`artifact.url`",
            ),
            (
                format!(
                    "release: \"1\"\nartifact:\n  url: a\n  sha256: \"{}\n    {}\"\n",
                    &SHA_A[..30],
                    &SHA_A[30..]
                ),
                4,
                "`artifact.sha256`",
            ),
        ] {
            let err = set_release(&text, "v1", "file:///b", SHA_B).unwrap_err();
            assert!(
                matches!(err, EditError::Unsupported { line: l, .. } if l == line),
                "{err}\n{text}"
            );
            let msg = err.to_string();
            assert!(msg.contains(key) && msg.contains("by hand"), "{msg}");
        }
        // A comment indented below a value is not more of it.
        let text =
            format!("release: \"1\"\n    # bumped by CI\nartifact:\n  url: a\n  sha256: {SHA_A}\n");
        let out = edit(&text);
        assert_eq!(changed_lines(&text, &out).len(), 3);
    }

    #[test]
    fn document_markers_and_compact_lists_are_fine() {
        let text = format!(
            "---\nrelease: \"1\"\nartifact:\n  url: a\n  sha256: {SHA_A}\nshared:\n- .env\n- uploads/\n...\n"
        );
        let out = edit(&text);
        assert_eq!(changed_lines(&text, &out).len(), 3);
        assert_eq!(value(&out, &["shared"]), value(&text, &["shared"]));
    }

    #[test]
    fn artifact_that_is_not_a_mapping_is_refused() {
        for (text, line) in [
            ("release: \"1\"\nartifact: s3://bucket/x.tar.zst\n", 2),
            ("release: \"1\"\nartifact: [a, b]\n", 2),
            ("release: \"1\"\nartifact:\n  - url: a\n", 2),
            ("release: \"1\"\nartifact:\n- url: a\n", 2),
            ("release: \"1\"\nartifact: |\n  text\n", 2),
        ] {
            let err = set_release(text, "v1", "file:///a", SHA_A).unwrap_err();
            assert_eq!(
                err,
                EditError::NotAMapping {
                    key: "artifact".into(),
                    line
                },
                "{text}"
            );
            assert!(
                err.to_string().contains("`artifact` is not a mapping"),
                "{err}"
            );
        }
    }

    #[test]
    fn release_or_url_holding_a_list_or_mapping_is_refused() {
        let err = set_release("release:\n  name: x\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert_eq!(
            err,
            EditError::NotAScalar {
                key: "release".into(),
                line: 1
            }
        );
        let err = set_release("release: [a]\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert_eq!(
            err,
            EditError::NotAScalar {
                key: "release".into(),
                line: 1
            }
        );
        let err = set_release(
            "release: \"1\"\nartifact:\n  url:\n  - a\n",
            "v1",
            "file:///a",
            SHA_A,
        )
        .unwrap_err();
        assert_eq!(
            err,
            EditError::NotAScalar {
                key: "artifact.url".into(),
                line: 3
            }
        );
        let err = set_release(
            "release: \"1\"\nartifact: { url: [a] }\n",
            "v1",
            "file:///a",
            SHA_A,
        )
        .unwrap_err();
        assert_eq!(
            err,
            EditError::NotAScalar {
                key: "artifact.url".into(),
                line: 2
            }
        );
    }

    #[test]
    fn text_that_is_not_a_manifest_mapping_is_refused() {
        let err = set_release("- a\n- b\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert!(
            matches!(err, EditError::Unsupported { line: 1, .. }),
            "{err}"
        );
        let err = set_release(
            "release: \"1\"\n---\nrelease: \"2\"\n",
            "v1",
            "file:///a",
            SHA_A,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                EditError::NotYaml(_) | EditError::Unsupported { line: 2, .. }
            ),
            "{err}"
        );
        let err = set_release("release: [\"1\"\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert!(matches!(err, EditError::NotYaml(_)), "{err}");
        let err = set_release(
            "release: \"1\"\nartifact: &a\n  url: x\n",
            "v1",
            "file:///a",
            SHA_A,
        )
        .unwrap_err();
        assert!(
            matches!(err, EditError::Unsupported { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = set_release(
            "release: \"1\"\nartifact: { url: a, url: b }\n",
            "v1",
            "file:///a",
            SHA_A,
        )
        .unwrap_err();
        assert!(matches!(err, EditError::NotYaml(_)), "{err}");
        let err = set_release("release: a\nrelease: b\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert!(matches!(err, EditError::NotYaml(_)), "{err}");
    }

    #[test]
    fn bad_values_are_refused_before_anything_is_read() {
        assert_eq!(
            set_release("", "1/2", "file:///a", SHA_A).unwrap_err(),
            EditError::InvalidRelease("1/2".into())
        );
        assert_eq!(
            set_release("", "", "file:///a", SHA_A).unwrap_err(),
            EditError::InvalidRelease(String::new())
        );
        assert_eq!(
            set_release("", &"a".repeat(65), "file:///a", SHA_A).unwrap_err(),
            EditError::InvalidRelease("a".repeat(65))
        );
        assert_eq!(
            set_release("", "v1", "file:///a", "abc").unwrap_err(),
            EditError::InvalidSha256("abc".into())
        );
        assert_eq!(
            set_release("", "v1", "", SHA_A).unwrap_err(),
            EditError::InvalidUrl
        );
        assert_eq!(
            set_release("", "v1", "file:///a\nb", SHA_A).unwrap_err(),
            EditError::InvalidUrl
        );
    }

    #[test]
    fn keys_written_with_quotes_or_spaces_before_the_colon_are_found() {
        let text = format!("\"release\" : \"1\"\n'artifact':\n  \"url\": a\n  sha256 : {SHA_A}\n");
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "\"release\" : \"2026.12.01-1\"\n'artifact':\n  \"url\": {NEW_URL}\n  sha256 : {SHA_B}\n"
            )
        );
    }

    #[test]
    fn a_comment_keeps_its_column_when_it_fits_and_its_spacing_otherwise() {
        let text = format!(
            "release: \"1\"  # short\nartifact:\n  url: a # tight\n  sha256: {SHA_A}   # hash\n"
        );
        let out = set_release(&text, "2026.12.01-1", "b", SHA_B).unwrap();
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"  # short\nartifact:\n  url: b # tight\n  sha256: {SHA_B}   # hash\n"
            )
        );
        let out = set_release(
            &format!(
                "release: \"2026.12.01-1\"   # long\nartifact:\n  url: a  # aligned\n  sha256: {SHA_A}\n"
            ),
            "1",
            "file:///b",
            SHA_B,
        )
        .unwrap();
        assert_eq!(
            out,
            format!(
                "release: \"1\"              # long\nartifact:\n  url: file:///b  # aligned\n  sha256: {SHA_B}\n"
            )
        );
    }

    #[test]
    fn the_parse_back_guard_refuses_results_that_change_other_values() {
        let before =
            format!("release: \"1\"\nartifact:\n  url: a\n  sha256: {SHA_A}\npaused: false\n");
        let good =
            format!("release: \"2\"\nartifact:\n  url: b\n  sha256: {SHA_B}\npaused: false\n");
        let parsed = || parse_yaml(&before).unwrap();
        assert_eq!(check_result(parsed(), &good, "2", "b", SHA_B), Ok(()));
        let err = check_result(
            parsed(),
            &good.replace("paused: false", "paused: true"),
            "2",
            "b",
            SHA_B,
        );
        assert_eq!(
            err,
            Err(EditError::Unsafe("other values would change".into()))
        );
        let err = check_result(parsed(), &good.replace("\"2\"", "2"), "2", "b", SHA_B);
        assert_eq!(
            err,
            Err(EditError::Unsafe(
                "`release` would not read back as written".into()
            ))
        );
    }

    #[test]
    fn tabs_after_the_colon_are_kept_and_anchors_aliases_and_tags_refused() {
        let text = format!("release:\t\"1\"\nartifact:\n  url:\tfile:///a\n  sha256: {SHA_A}\n");
        assert_eq!(
            edit(&text),
            format!(
                "release:\t\"2026.12.01-1\"\nartifact:\n  url:\t{NEW_URL}\n  sha256: {SHA_B}\n"
            )
        );
        // An anchor may be what other values refer to, an alias is another
        // value's text: neither is this module's to rewrite.
        for (text, line) in [
            (
                format!(
                    "x-base: &elsewhere file:///a\nrelease: \"1\"\nartifact:\n  url: *elsewhere\n  sha256: {SHA_A}\n"
                ),
                4,
            ),
            (
                format!("release: &r \"1\"\nartifact:\n  url: a\n  sha256: {SHA_A}\n"),
                1,
            ),
            (
                format!("release: \"1\"\nartifact:\n  url: !!str a\n  sha256: {SHA_A}\n"),
                3,
            ),
        ] {
            let err = set_release(&text, "v1", "file:///b", SHA_B).unwrap_err();
            assert!(
                matches!(err, EditError::Unsupported { line: l, .. } if l == line),
                "{err}\n{text}"
            );
            assert!(err.to_string().contains("anchor, alias or tag"), "{err}");
        }
    }

    #[test]
    fn error_lines_refer_to_the_text_passed_in_even_after_an_insertion() {
        // `release` is inserted above `artifact` before `artifact` is read.
        let err = set_release("# header\nartifact: nope\n", "v1", "file:///a", SHA_A).unwrap_err();
        assert_eq!(
            err,
            EditError::NotAMapping {
                key: "artifact".into(),
                line: 2
            }
        );
        let text = "release: >\n  folded\n  value\nartifact:\n  url:\n    k: v\n";
        let err = set_release(text, "v1", "file:///a", SHA_A).unwrap_err();
        assert_eq!(
            err,
            EditError::NotAScalar {
                key: "artifact.url".into(),
                line: 5
            }
        );
    }

    #[test]
    fn never_panics_on_damaged_manifests() {
        // Every prefix, and the text without each line: whatever comes back,
        // an Ok is guaranteed by the parse-back guard to hold the new values.
        let lines: Vec<&str> = SPEC_EXAMPLE.split_inclusive('\n').collect();
        let mut texts: Vec<String> = (0..=SPEC_EXAMPLE.len())
            .filter(|&n| SPEC_EXAMPLE.is_char_boundary(n))
            .map(|n| SPEC_EXAMPLE[..n].to_string())
            .collect();
        texts.extend((0..lines.len()).map(|skip| {
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect()
        }));
        let mut edited = 0;
        for text in &texts {
            if let Ok(out) = set_release(text, "v2", NEW_URL, SHA_B) {
                assert_eq!(value(&out, &["release"]).as_str(), Some("v2"), "{text}");
                edited += 1;
            }
        }
        assert!(
            edited > texts.len() / 2,
            "only {edited} of {} edited",
            texts.len()
        );
    }

    #[test]
    fn the_example_manifests_can_be_published_to() {
        for text in [
            include_str!("../../example-repo/apps/web.yaml"),
            include_str!("../../example-repo/apps/api.yaml"),
        ] {
            let out = set_release(
                text,
                "1.0.0",
                "file:///var/lib/hoist-demo/store/web-1.0.0.tar.zst",
                SHA_A,
            )
            .unwrap();
            let changed = changed_lines(text, &out);
            assert_eq!(changed.len(), 3, "{changed:?}");
            assert_eq!(value(&out, &["release"]).as_str(), Some("1.0.0"));
            assert_eq!(value(&out, &["artifact", "sha256"]).as_str(), Some(SHA_A));
        }
    }
}
