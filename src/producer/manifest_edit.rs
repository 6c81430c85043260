//! Rewriting a manifest's `release` and `artifact` in place, for `hoist publish`
//! and `hoist demo`.
//!
//! Manifests live in a config repository that people read, review and edit.
//! A round-trip through a YAML parser would drop their comments, reorder
//! keys and change quoting, turning a one-line release bump into a noisy
//! diff. So this module edits the text line by line and understands only the
//! YAML it has to: the top-level block mapping, the `artifact` mapping under
//! it (block or one-line `{ ... }` flow style) and scalar values (plain,
//! quoted, block or continued over several lines). Every byte it does not
//! have to change stays as it was; inserted lines follow the file's line
//! endings and indentation.
//!
//! Text it does not understand is refused with an [`EditError`], never
//! guessed at. As a last guard the result is parsed back and compared with
//! the original: the three values must read exactly as written and every
//! other value must be unchanged, otherwise the edit is refused.

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
    #[error("line {line}: `{key}` appears more than once")]
    DuplicateKey { key: String, line: usize },
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

    let mut doc = Doc::split(text);
    doc.set_release(release).map_err(|e| doc.in_original(e))?;
    doc.set_url(url).map_err(|e| doc.in_original(e))?;
    doc.set_sha256(&sha256).map_err(|e| doc.in_original(e))?;
    let out = doc.join();

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
#[derive(Debug, Clone)]
struct Line {
    body: String,
    eol: &'static str,
    /// Index of this line in the original text; `None` for inserted lines.
    origin: Option<usize>,
}

/// A top-level or `artifact` key: where it is and where its `:` ends.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    line: usize,
    indent: usize,
    /// Byte offset in the line just after the `:`.
    colon: usize,
}

/// How a scalar was quoted, so that its replacement can look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Double,
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing after the `:` on the key line (maybe a comment).
    Empty,
    Plain,
    Double,
    Single,
    /// `{ ... }` or `[ ... ]`.
    Flow,
    /// `|` or `>`, content on the following lines.
    Block,
    /// Starts with `&name`.
    Anchor,
}

/// The value that follows a key's `:`.
#[derive(Debug, Clone)]
struct Span {
    kind: Kind,
    /// Byte offset in the key line where the value starts (the `:` offset
    /// when the value is empty).
    start: usize,
    /// Line on which the value ends (later than the key line for quoted
    /// scalars and flow collections that span lines).
    end_line: usize,
    /// Byte offset in `end_line` just after the value.
    end: usize,
    /// Byte offset in `end_line` of a trailing `# comment`.
    comment: Option<usize>,
}

struct Doc {
    bom: bool,
    lines: Vec<Line>,
    /// Line ending for inserted lines: the file's first one.
    eol: &'static str,
}

impl Doc {
    fn split(text: &str) -> Doc {
        let (bom, text) = match text.strip_prefix('\u{feff}') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let lines: Vec<Line> = text
            .split_inclusive('\n')
            .enumerate()
            .map(|(i, piece)| {
                let (body, eol) = if let Some(body) = piece.strip_suffix("\r\n") {
                    (body, "\r\n")
                } else if let Some(body) = piece.strip_suffix('\n') {
                    (body, "\n")
                } else {
                    (piece, "")
                };
                Line {
                    body: body.to_string(),
                    eol,
                    origin: Some(i),
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

    /// `e` with its line number translated from the text being edited back
    /// to the text the caller passed in.
    fn in_original(&self, e: EditError) -> EditError {
        let map = |line: usize| {
            self.lines
                .get(line - 1)
                .and_then(|l| l.origin)
                .map_or(line, |i| i + 1)
        };
        match e {
            EditError::NotAMapping { key, line } => EditError::NotAMapping {
                key,
                line: map(line),
            },
            EditError::NotAScalar { key, line } => EditError::NotAScalar {
                key,
                line: map(line),
            },
            EditError::DuplicateKey { key, line } => EditError::DuplicateKey {
                key,
                line: map(line),
            },
            EditError::Unsupported { line, reason } => EditError::Unsupported {
                line: map(line),
                reason,
            },
            other => other,
        }
    }

    fn join(&self) -> String {
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        for line in &self.lines {
            out.push_str(&line.body);
            out.push_str(line.eol);
        }
        out
    }

    /// Inserts whole lines before line `at`, keeping a missing final line
    /// ending missing.
    fn insert(&mut self, at: usize, bodies: Vec<String>) {
        let at_end = at == self.lines.len();
        let had_lines = !self.lines.is_empty();
        let last_eol = if at_end && had_lines {
            let last = self.lines.len() - 1;
            std::mem::replace(&mut self.lines[last].eol, self.eol)
        } else {
            self.eol
        };
        let n = bodies.len();
        let new = bodies.into_iter().enumerate().map(|(i, body)| Line {
            body,
            origin: None,
            eol: if at_end && i + 1 == n && had_lines {
                last_eol
            } else {
                self.eol
            },
        });
        self.lines.splice(at..at, new);
    }

    fn top_level(&self) -> Result<Vec<Entry>, EditError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut i = 0;
        while i < self.lines.len() {
            let body = &self.lines[i].body;
            if is_blank(body) || is_comment(body) || indent_of(body) > 0 {
                i += 1;
                continue;
            }
            if body.starts_with("---") || body.starts_with("...") {
                if !entries.is_empty() && body.starts_with("---") {
                    return Err(unsupported(
                        i,
                        "a second YAML document starts here; a manifest holds one",
                    ));
                }
                i += 1;
                continue;
            }
            if body.starts_with('%') && entries.is_empty() {
                i += 1;
                continue;
            }
            if is_seq_item(body) && !entries.is_empty() {
                // A list written at the same indentation as its key.
                i += 1;
                continue;
            }
            let Some((key, colon)) = parse_key(body) else {
                return Err(unsupported(
                    i,
                    "expected a top-level `key: value`; a manifest is a YAML mapping",
                ));
            };
            let span = value_span(&self.lines, i, colon)?;
            entries.push(Entry {
                key,
                line: i,
                indent: 0,
                colon,
            });
            i = span.end_line + 1;
        }
        Ok(entries)
    }

    /// The entries of the block mapping under `parent` (an entry whose value
    /// is empty on its own line).
    fn children(&self, parent: &Entry) -> Result<Vec<Entry>, EditError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut child_indent = None;
        let mut i = parent.line + 1;
        while i < self.lines.len() {
            let body = &self.lines[i].body;
            if is_blank(body) || is_comment(body) {
                i += 1;
                continue;
            }
            let ind = indent_of(body);
            if ind < parent.indent
                || (ind == parent.indent && !(is_seq_item(&body[ind..]) && child_indent.is_none()))
            {
                break;
            }
            let ci = *child_indent.get_or_insert(ind);
            if is_seq_item(&body[ind..]) && entries.is_empty() {
                return Err(EditError::NotAMapping {
                    key: parent.key.clone(),
                    line: parent.line + 1,
                });
            }
            if ind < ci {
                return Err(unsupported(
                    i,
                    &format!("the indentation under `{}` is inconsistent", parent.key),
                ));
            }
            if ind > ci || is_seq_item(&body[ind..]) {
                // Part of the previous entry's value.
                i += 1;
                continue;
            }
            let Some((key, colon)) = parse_key(&body[ind..]) else {
                return Err(unsupported(
                    i,
                    &format!("expected `key: value` under `{}`", parent.key),
                ));
            };
            let colon = ind + colon;
            let span = value_span(&self.lines, i, colon)?;
            entries.push(Entry {
                key,
                line: i,
                indent: ind,
                colon,
            });
            i = span.end_line + 1;
        }
        Ok(entries)
    }

    fn set_release(&mut self, release: &str) -> Result<(), EditError> {
        let top = self.top_level()?;
        let value = double_quoted(release);
        match unique(&top, "release", "release")? {
            Some(entry) => self.replace_scalar(&entry, "release", &|_| value.clone()),
            None => {
                let at = top.first().map_or(self.lines.len(), |e| e.line);
                self.insert(at, vec![format!("release: {value}")]);
                Ok(())
            }
        }
    }

    fn set_url(&mut self, url: &str) -> Result<(), EditError> {
        self.set_artifact_key("url", url)
    }

    fn set_sha256(&mut self, sha256: &str) -> Result<(), EditError> {
        self.set_artifact_key("sha256", sha256)
    }

    /// Sets one key of the `artifact` mapping, creating the mapping when the
    /// manifest has none. `url` comes before `sha256`.
    fn set_artifact_key(&mut self, key: &str, value: &str) -> Result<(), EditError> {
        let top = self.top_level()?;
        let Some(artifact) = unique(&top, "artifact", "artifact")? else {
            let release = unique(&top, "release", "release")?;
            let at = match release {
                Some(r) => {
                    let span = value_span(&self.lines, r.line, r.colon)?;
                    value_extent(&self.lines, &r, &span)
                }
                None => top.first().map_or(self.lines.len(), |e| e.line),
            };
            let ind = " ".repeat(self.guess_indent());
            let plain = render(value, Style::Plain, false);
            self.insert(
                at,
                vec!["artifact:".to_string(), format!("{ind}{key}: {plain}")],
            );
            return Ok(());
        };
        let span = value_span(&self.lines, artifact.line, artifact.colon)?;
        let body = &self.lines[artifact.line].body;
        match span.kind {
            Kind::Empty => {}
            Kind::Flow if body[span.start..].starts_with('{') => {
                if span.end_line != artifact.line {
                    return Err(unsupported(
                        artifact.line,
                        "`artifact: { ... }` spans several lines; put it on one line or write it as a block",
                    ));
                }
                return self.set_flow_key(&artifact, &span, key, value);
            }
            Kind::Plain
                if matches!(&body[span.start..span.end], "~" | "null" | "Null" | "NULL") =>
            {
                // An empty artifact: drop the null, keep any comment.
                let comment = span.comment.map(|c| body[c..].to_string());
                let mut new = body[..artifact.colon].to_string();
                if let Some(c) = comment {
                    new.push(' ');
                    new.push_str(&c);
                }
                self.lines[artifact.line].body = new;
            }
            Kind::Anchor => {
                return Err(unsupported(
                    artifact.line,
                    "`artifact` carries a YAML anchor; set it by hand",
                ));
            }
            _ => {
                return Err(EditError::NotAMapping {
                    key: "artifact".into(),
                    line: artifact.line + 1,
                });
            }
        }
        if self.seq_follows(&artifact).is_some() {
            return Err(EditError::NotAMapping {
                key: "artifact".into(),
                line: artifact.line + 1,
            });
        }

        let children = self.children(&artifact)?;
        let path = format!("artifact.{key}");
        if let Some(entry) = unique(&children, key, &path)? {
            return self.replace_scalar(&entry, &path, &|style| render(value, style, false));
        }
        let ind = match children.first() {
            Some(first) => first.indent,
            None => self.guess_indent(),
        };
        let at = if key == "url" {
            match unique(&children, "sha256", "artifact.sha256")? {
                Some(sha) => sha.line,
                None => artifact.line + 1,
            }
        } else {
            match unique(&children, "url", "artifact.url")? {
                Some(url) => {
                    let span = value_span(&self.lines, url.line, url.colon)?;
                    value_extent(&self.lines, &url, &span)
                }
                None => artifact.line + 1,
            }
        };
        let line = format!(
            "{}{key}: {}",
            " ".repeat(ind),
            render(value, Style::Plain, false)
        );
        self.insert(at, vec![line]);
        Ok(())
    }

    /// Rewrites the one line of `artifact: { url: ..., sha256: ... }`.
    fn set_flow_key(
        &mut self,
        artifact: &Entry,
        span: &Span,
        key: &str,
        value: &str,
    ) -> Result<(), EditError> {
        let line_no = artifact.line;
        let body = self.lines[line_no].body.clone();
        let inner = &body[span.start + 1..span.end - 1];
        let lead = &inner[..inner.len() - inner.trim_start().len()];
        let trail = &inner[inner.trim_end().len()..];

        let mut items: Vec<(Option<String>, String)> = Vec::new();
        for part in split_flow_entries(inner) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match parse_key(part) {
                Some((k, _)) => items.push((Some(k), part.to_string())),
                None => items.push((None, part.to_string())),
            }
        }
        for k in ["url", "sha256"] {
            if items
                .iter()
                .filter(|(ik, _)| ik.as_deref() == Some(k))
                .count()
                > 1
            {
                return Err(EditError::DuplicateKey {
                    key: format!("artifact.{k}"),
                    line: line_no + 1,
                });
            }
        }
        let position = |k: &str| items.iter().position(|(ik, _)| ik.as_deref() == Some(k));
        match position(key) {
            Some(idx) => {
                let part = &items[idx].1;
                let (_, colon) = parse_key(part).unwrap_or_default();
                let rest = &part[colon..];
                let value_at = colon + (rest.len() - rest.trim_start().len());
                let old = part[value_at..].trim_end();
                if old.starts_with(['{', '[']) {
                    return Err(EditError::NotAScalar {
                        key: format!("artifact.{key}"),
                        line: line_no + 1,
                    });
                }
                let style = style_of(old);
                let sep = if value_at == colon { " " } else { "" };
                items[idx].1 = format!("{}{sep}{}", &part[..value_at], render(value, style, true));
            }
            None => {
                let item = (
                    Some(key.to_string()),
                    format!("{key}: {}", render(value, Style::Plain, true)),
                );
                let at = if key == "url" {
                    position("sha256").unwrap_or(0)
                } else {
                    position("url").map_or(items.len(), |i| i + 1)
                };
                items.insert(at, item);
            }
        }
        let joined = items
            .iter()
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (lead, trail) = if inner.trim().is_empty() {
            (" ", " ")
        } else {
            (lead, trail)
        };
        let new = format!("{}{{{lead}{joined}{trail}}}", &body[..span.start]);
        self.lines[line_no].body = with_comment(new, &body, span);
        Ok(())
    }

    /// Replaces the scalar value of `entry` (and any lines it continues on)
    /// with one line holding `render(style of the old value)`.
    fn replace_scalar(
        &mut self,
        entry: &Entry,
        path: &str,
        render: &dyn Fn(Style) -> String,
    ) -> Result<(), EditError> {
        let span = value_span(&self.lines, entry.line, entry.colon)?;
        let body = &self.lines[entry.line].body;
        let style = match span.kind {
            Kind::Double => Style::Double,
            Kind::Single => Style::Single,
            Kind::Flow => {
                return Err(EditError::NotAScalar {
                    key: path.into(),
                    line: entry.line + 1,
                });
            }
            Kind::Anchor => {
                return Err(unsupported(
                    entry.line,
                    &format!(
                        "`{path}` carries a YAML anchor that other values may refer to; set it by hand"
                    ),
                ));
            }
            Kind::Empty | Kind::Plain | Kind::Block => Style::Plain,
        };
        let extent = value_extent(&self.lines, entry, &span);
        if span.kind == Kind::Empty {
            let nested = self.lines[entry.line + 1..extent]
                .iter()
                .map(|l| l.body.trim_start())
                .find(|b| !b.is_empty() && !b.starts_with('#'))
                .is_some_and(|b| is_seq_item(b) || parse_key(b).is_some());
            if nested || self.seq_follows(entry).is_some() {
                return Err(EditError::NotAScalar {
                    key: path.into(),
                    line: entry.line + 1,
                });
            }
        }
        let mut new = body[..span.start].to_string();
        if span.start == entry.colon {
            new.push(' ');
        }
        new.push_str(&render(style));
        let new = if span.end_line == entry.line {
            with_comment(new, body, &span)
        } else {
            match span.comment {
                Some(c) => format!("{new} {}", &self.lines[span.end_line].body[c..]),
                None => new,
            }
        };
        let eol = self.lines[extent - 1].eol;
        let origin = self.lines[entry.line].origin;
        self.lines.splice(
            entry.line..extent,
            [Line {
                body: new,
                eol,
                origin,
            }],
        );
        Ok(())
    }

    /// The line of a `- item` written at the same indentation as `entry`
    /// right below it (a list value in compact style), if there is one.
    fn seq_follows(&self, entry: &Entry) -> Option<usize> {
        let (i, line) = self
            .lines
            .iter()
            .enumerate()
            .skip(entry.line + 1)
            .find(|(_, l)| !is_blank(&l.body) && !is_comment(&l.body))?;
        let ind = indent_of(&line.body);
        (ind == entry.indent && is_seq_item(&line.body[ind..])).then_some(i)
    }

    /// The indentation the file uses for nested keys (its first indented
    /// line), 2 when it has none.
    fn guess_indent(&self) -> usize {
        self.lines
            .iter()
            .map(|l| &l.body)
            .filter(|b| !is_blank(b) && !is_comment(b))
            .map(|b| indent_of(b))
            .find(|&n| n > 0)
            .unwrap_or(2)
    }
}

/// The single entry named `key`, or an error naming its second occurrence.
fn unique(entries: &[Entry], key: &str, path: &str) -> Result<Option<Entry>, EditError> {
    let mut found = entries.iter().filter(|e| e.key == key);
    let first = found.next().cloned();
    match found.next() {
        Some(second) => Err(EditError::DuplicateKey {
            key: path.into(),
            line: second.line + 1,
        }),
        None => Ok(first),
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

/// `- item` or a lone `-` (text already past its indentation).
fn is_seq_item(s: &str) -> bool {
    s == "-" || s.starts_with("- ") || s.starts_with("-\t")
}

/// Parses `key:` at the start of `s`; returns the key (unquoted) and the
/// byte offset just after the `:`.
fn parse_key(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let colon_ok =
        |i: usize| b.get(i) == Some(&b':') && matches!(b.get(i + 1), None | Some(b' ' | b'\t'));
    match *b.first()? {
        q @ (b'"' | b'\'') => {
            let close = closing_quote(s, 0, q)?;
            let mut i = close + 1;
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            colon_ok(i).then(|| (s[1..close].to_string(), i + 1))
        }
        b'#' | b'[' | b'{' | b'?' | b'&' | b'*' | b'!' | b'|' | b'>' | b'%' | b'@' | b'`' => None,
        _ if is_seq_item(s) => None,
        _ => {
            for i in 0..b.len() {
                if b[i] == b'#' && i > 0 && matches!(b[i - 1], b' ' | b'\t') {
                    return None;
                }
                if colon_ok(i) {
                    let key = s[..i].trim_end();
                    return (!key.is_empty()).then(|| (key.to_string(), i + 1));
                }
            }
            None
        }
    }
}

/// Byte offset of the quote closing the string that opens at `open`, on the
/// same line.
fn closing_quote(s: &str, open: usize, q: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            c if c == q => {
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Where the quoted scalar or flow collection opening at `lines[first]`
/// byte `start` is closed: (line, byte just after the closing character).
fn scan_close(lines: &[Line], first: usize, start: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    for (n, line) in lines.iter().enumerate().skip(first) {
        let b = line.body.as_bytes();
        let mut i = if n == first { start } else { 0 };
        let mut prev: Option<u8> = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(b'"') => match c {
                    b'\\' => {
                        i += 2;
                        continue;
                    }
                    b'"' => {
                        quote = None;
                        if depth == 0 {
                            return Some((n, i + 1));
                        }
                    }
                    _ => {}
                },
                Some(_) => {
                    if c == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        quote = None;
                        if depth == 0 {
                            return Some((n, i + 1));
                        }
                    }
                }
                None => match c {
                    b'"' | b'\''
                        if matches!(
                            prev,
                            None | Some(b' ' | b'\t' | b'[' | b'{' | b',' | b':')
                        ) =>
                    {
                        quote = Some(c);
                    }
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some((n, i + 1));
                        }
                    }
                    b'#' if matches!(prev, None | Some(b' ' | b'\t')) => break,
                    _ => {}
                },
            }
            prev = Some(c);
            i += 1;
        }
    }
    None
}

/// The value after the `:` of the key on line `line`.
fn value_span(lines: &[Line], line: usize, colon: usize) -> Result<Span, EditError> {
    let body = &lines[line].body;
    let b = body.as_bytes();
    let mut start = colon;
    while matches!(b.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let (kind, end_line, end) = match b.get(start) {
        None | Some(b'#') => {
            let comment = (start < b.len()).then_some(start);
            return Ok(Span {
                kind: Kind::Empty,
                start: colon,
                end_line: line,
                end: colon,
                comment,
            });
        }
        Some(&c @ (b'"' | b'\'' | b'{' | b'[')) => {
            let Some((end_line, end)) = scan_close(lines, line, start) else {
                return Err(unsupported(
                    line,
                    "a quoted value or bracket is never closed",
                ));
            };
            let kind = match c {
                b'"' => Kind::Double,
                b'\'' => Kind::Single,
                _ => Kind::Flow,
            };
            (kind, end_line, end)
        }
        Some(b'|' | b'>') => (Kind::Block, line, start + 1),
        Some(b'&') => (Kind::Anchor, line, start + 1),
        Some(_) => (Kind::Plain, line, start),
    };
    // The rest of the line: a comment, or (for plain and block scalars)
    // more of the value.
    let rest = &lines[end_line].body;
    let rb = rest.as_bytes();
    let mut value_end = end;
    let mut comment = None;
    let mut i = end;
    while i < rb.len() {
        if rb[i] == b'#' && (i == 0 || matches!(rb[i - 1], b' ' | b'\t')) {
            comment = Some(i);
            break;
        }
        if !matches!(rb[i], b' ' | b'\t') {
            value_end = i + 1;
        }
        i += 1;
    }
    Ok(Span {
        kind,
        start,
        end_line,
        end: value_end,
        comment,
    })
}

/// The line after the last line of `entry`'s value: the value's own lines
/// plus any following lines indented deeper than the key (a block scalar or
/// a continued plain scalar). Comment lines at the end stay outside.
fn value_extent(lines: &[Line], entry: &Entry, span: &Span) -> usize {
    let mut last = span.end_line + 1;
    for (j, line) in lines.iter().enumerate().skip(span.end_line + 1) {
        if is_blank(&line.body) {
            continue;
        }
        if indent_of(&line.body) <= entry.indent {
            break;
        }
        if !is_comment(&line.body) {
            last = j + 1;
        }
    }
    last
}

/// `new` (key and new value) followed by the old line's trailing comment:
/// in the same column when it was aligned (more than one space after the
/// value) and still fits, otherwise after the same spacing as before.
fn with_comment(mut new: String, old: &str, span: &Span) -> String {
    let Some(c) = span.comment else { return new };
    let gap = c - span.end;
    let width = |s: &str| s.chars().count();
    let (column, end) = (width(&old[..c]), width(&new));
    let pad = if gap > 1 && column > end {
        column - end
    } else {
        gap.max(1)
    };
    new.push_str(&" ".repeat(pad));
    new.push_str(&old[c..]);
    new
}

/// Splits the inside of a flow mapping at its top-level commas.
fn split_flow_entries(inner: &str) -> Vec<&str> {
    let b = inner.as_bytes();
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut from = 0;
    let mut prev: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if q == b'"' && c == b'\\' {
                    i += 2;
                    prev = None;
                    continue;
                }
                if c == q {
                    if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                }
            }
            None => match c {
                b'"' | b'\''
                    if matches!(prev, None | Some(b' ' | b'\t' | b'[' | b'{' | b',' | b':')) =>
                {
                    quote = Some(c);
                }
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    parts.push(&inner[from..i]);
                    from = i + 1;
                }
                _ => {}
            },
        }
        prev = Some(c);
        i += 1;
    }
    parts.push(&inner[from..]);
    parts
}

fn style_of(old_value: &str) -> Style {
    match old_value.as_bytes().first() {
        Some(b'"') => Style::Double,
        Some(b'\'') => Style::Single,
        _ => Style::Plain,
    }
}

/// `value` as YAML in `style`, or double-quoted when that style could not
/// hold it. `flow`: the value sits inside `{ ... }`.
fn render(value: &str, style: Style, flow: bool) -> String {
    match style {
        Style::Double => double_quoted(value),
        Style::Single if !value.chars().any(char::is_control) => {
            format!("'{}'", value.replace('\'', "''"))
        }
        Style::Plain if plain_is_safe(value, flow) => value.to_string(),
        _ => double_quoted(value),
    }
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether `value` written without quotes reads back as the same string.
fn plain_is_safe(value: &str, flow: bool) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if value.trim() != value || value.chars().any(|c| c.is_control()) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return false;
    }
    if value.contains(": ") || value.contains(" #") || value.ends_with(':') {
        return false;
    }
    if flow && value.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    !resolves_to_non_string(value)
}

/// Whether a plain scalar would be read as null, a boolean or a number
/// (YAML 1.1 or 1.2), which a string must not be.
fn resolves_to_non_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "~" | "null" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return true;
    }
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if matches!(unsigned, ".inf" | ".nan") {
        return true;
    }
    for prefix in ["0x", "0o", "0b"] {
        if let Some(digits) = unsigned.strip_prefix(prefix)
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_')
        {
            return true;
        }
    }
    let numberish = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'e' | b'+' | b'-'));
    numberish && unsigned.bytes().any(|b| b.is_ascii_digit())
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
    fn flow_style_artifact_is_rewritten_on_its_line() {
        let text = format!(
            "release: \"1\"\nartifact: {{ url: file:///a.tar.zst, sha256: \"{SHA_A}\", signature_url: file:///a.minisig }}  # one line\npaused: false\n"
        );
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\nartifact: {{ url: {NEW_URL}, sha256: \"{SHA_B}\", signature_url: file:///a.minisig }}  # one line\npaused: false\n"
            )
        );
    }

    #[test]
    fn flow_style_artifact_gets_missing_keys_in_order() {
        let out = edit("release: \"1\"\nartifact: {}\n");
        assert_eq!(
            out,
            format!("release: \"2026.12.01-1\"\nartifact: {{ url: {NEW_URL}, sha256: {SHA_B} }}\n")
        );
        let out = edit(&format!("release: \"1\"\nartifact: {{sha256: {SHA_A}}}\n"));
        assert_eq!(
            out,
            format!("release: \"2026.12.01-1\"\nartifact: {{url: {NEW_URL}, sha256: {SHA_B}}}\n")
        );
    }

    #[test]
    fn flow_style_quotes_values_that_would_break_the_braces() {
        let url = "https://example.com/a,b.tar.zst";
        let out = set_release(
            "release: x\nartifact: { url: a, sha256: b }\n",
            "v1",
            url,
            SHA_A,
        )
        .unwrap();
        assert_eq!(
            out,
            format!("release: \"v1\"\nartifact: {{ url: \"{url}\", sha256: {SHA_A} }}\n")
        );
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
    fn multi_line_values_are_collapsed_onto_the_key_line() {
        let text = format!(
            "release: >-\n  2026.01.01-1\n# next\nartifact:\n  url:\n    file:///a\n  sha256: \"{}\n    {}\"\n",
            &SHA_A[..30],
            &SHA_A[30..]
        );
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "release: \"2026.12.01-1\"\n# next\nartifact:\n  url: {NEW_URL}\n  sha256: \"{SHA_B}\"\n"
            )
        );
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
        assert!(
            matches!(err, EditError::NotYaml(_) | EditError::DuplicateKey { .. }),
            "{err}"
        );
        // The parser rejects duplicate keys before the editor sees them; the
        // editor's own check still names the line.
        let lines = Doc::split("release: a\nrelease: b\n");
        let top = lines.top_level().unwrap();
        assert_eq!(
            unique(&top, "release", "release").unwrap_err(),
            EditError::DuplicateKey {
                key: "release".into(),
                line: 2
            }
        );
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
                "release: \"2026.12.01-1\"   # long\nartifact: {{ url: a,  sha256: {SHA_A} }}\n"
            ),
            "1",
            "b",
            SHA_B,
        )
        .unwrap();
        assert_eq!(
            out,
            format!(
                "release: \"1\"              # long\nartifact: {{ url: b, sha256: {SHA_B} }}\n"
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
    fn tabs_after_the_colon_and_aliases_are_replaced_like_any_value() {
        let text = format!("release:\t\"1\"\nartifact:\n  url: *elsewhere\n  sha256: {SHA_A}\n");
        let text = format!("x-base: &elsewhere file:///a\n{text}");
        // An unknown key is the manifest loader's business; the editor only
        // has to leave it alone.
        let out = edit(&text);
        assert_eq!(
            out,
            format!(
                "x-base: &elsewhere file:///a\nrelease:\t\"2026.12.01-1\"\nartifact:\n  url: {NEW_URL}\n  sha256: {SHA_B}\n"
            )
        );
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
