//! The values of commit statuses (SPEC §4), shared by the pure decisions
//! (`plan`, `rollout`) and the forge edge (`report`): the four states a
//! server reports for a commit, one status, what reading a commit's
//! statuses back finds, the context template and the 140-character
//! description rule.
//!
//! Kept apart from `report`, which talks HTTP to forges, so that the pure
//! modules import values, not the edge.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state of a commit on one server, as SPEC §4 names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The server has started to apply the commit.
    Pending,
    /// Every targeted app runs the commit's release and is healthy.
    Success,
    /// An app failed to deploy or its health gate, and was rolled back.
    Failure,
    /// The commit cannot be applied at all (invalid manifest, bad signature…).
    Error,
}

impl State {
    /// The lowercase name GitHub and Gitea use, and hoist's own files.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One commit status, ready to post.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// The full commit id the status is about.
    pub sha: String,
    pub state: State,
    /// The rendered context, e.g. `hoist/production/web-1`.
    pub context: String,
    /// Human-readable, at most 140 characters (see [`truncate_description`]).
    pub description: String,
}

/// One status as the forge keeps it, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadStatus {
    /// The context (GitLab: the status `name`), e.g. `hoist/production/web-1`.
    pub context: String,
    /// In hoist's words (GitLab's `failed` reads [`State::Failure`]).
    pub state: State,
    pub description: String,
    /// When the status was made, as the forge says (`created_at`; GitLab's
    /// `finished_at` when set, since GitLab turns a `pending` status into
    /// the final one in place). On the forge's clock.
    pub at: SystemTime,
    /// The forge's id (the `file` provider: the line number): which of two
    /// statuses made in the same second is the newer.
    pub order: u64,
}

/// What a read of one commit's statuses found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRead {
    /// The latest status of each context, sorted by context.
    pub statuses: Vec<ReadStatus>,
    /// Every status read (all pages), oldest first (by time, then order):
    /// a rollout's first wave opens with the earliest status of a release,
    /// and a server's `down` report moves its success time, both of which
    /// the latest status of a context no longer shows.
    pub all: Vec<ReadStatus>,
    /// The forge's clock when it answered (its `Date` header; the `file`
    /// provider: this machine's clock, which wrote the statuses too).
    pub date: SystemTime,
    /// To send back as `If-None-Match` next time, when the forge gave one.
    pub etag: Option<String>,
    /// HTTP requests the read took (one per page; 0 for the `file` provider).
    pub requests: u32,
    /// Entries (lines of a `file`) that could not be read, or whose time is
    /// impossible: skipped, never trusted.
    pub skipped: usize,
}

impl StatusRead {
    /// A read of `all` (in any order), answered at `date`.
    pub fn new(mut all: Vec<ReadStatus>, date: SystemTime) -> StatusRead {
        all.sort_by_key(|s| (s.at, s.order));
        StatusRead {
            statuses: latest_per_context(all.iter().cloned()),
            all,
            date,
            etag: None,
            requests: 0,
            skipped: 0,
        }
    }

    /// The latest status of `context`, if any.
    pub fn get(&self, context: &str) -> Option<&ReadStatus> {
        self.statuses
            .binary_search_by(|s| s.context.as_str().cmp(context))
            .ok()
            .map(|i| &self.statuses[i])
    }

    /// Every status of `context`, oldest first.
    pub fn history<'a>(&'a self, context: &'a str) -> impl Iterator<Item = &'a ReadStatus> + 'a {
        self.all.iter().filter(move |s| s.context == context)
    }
}

/// How far past the forge's clock a status's time may be and still be
/// believed: the `Date` of an answer has whole seconds, and a forge of
/// several machines may be a little off between them. Further is impossible.
pub const MAX_AHEAD: Duration = Duration::from_secs(60);

/// Whether a status's time can be true, read at forge time `date`: not
/// after the answer (beyond [`MAX_AHEAD`]), not before 2000. An impossible
/// time (a damaged line, `"at": 1e300`) is skipped and counted by every
/// reader, never trusted: a rollout's bakes and deadlines are made of them.
pub fn plausible(at: SystemTime, date: SystemTime) -> bool {
    let floor = UNIX_EPOCH + Duration::from_secs(946_684_800); // 2000-01-01
    at >= floor && date.checked_add(MAX_AHEAD).is_none_or(|limit| at <= limit)
}

/// Keep the latest status of each context: the newest `at`, and between
/// two of the same time, the higher `order`. Sorted by context.
pub fn latest_per_context(all: impl IntoIterator<Item = ReadStatus>) -> Vec<ReadStatus> {
    let mut latest: BTreeMap<String, ReadStatus> = BTreeMap::new();
    for s in all {
        match latest.get(&s.context) {
            Some(kept) if (kept.at, kept.order) >= (s.at, s.order) => {}
            _ => {
                latest.insert(s.context.clone(), s);
            }
        }
    }
    latest.into_values().collect()
}

/// Render the `status.context` template.
///
/// `{environment}`, `{host}` and `{app}` are replaced; with `app` `None` a
/// `{app}` in the template becomes the empty string (asking for per-app
/// contexts without an app is a caller bug, not a user error). Anything else
/// in braces is left as written.
pub fn render_context(template: &str, environment: &str, host: &str, app: Option<&str>) -> String {
    template
        .replace("{environment}", environment)
        .replace("{host}", host)
        .replace("{app}", app.unwrap_or(""))
}

/// The longest description forges accept (GitHub's limit; the others follow).
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// Cut `s` to at most 140 characters (not bytes), ending with `…` when cut.
pub fn truncate_description(s: &str) -> String {
    if s.chars().count() <= MAX_DESCRIPTION_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX_DESCRIPTION_CHARS - 1).collect();
    out.push('…');
    out
}

/// What a status says about an app, in a form every server reads the same
/// way: the machine-readable head at the start of a description
/// (`[hoist:halt web 1.4.0] web 1.4.0 halted: web-1 failed`). Only the
/// description reaches every forge, so the fleet's coordination (halts,
/// apps that are down, local rollbacks, run-once steps) rests on this head,
/// never on a phrase of the human text: "public-api 2.0 halted" must never
/// read as a halt of `api`. App names (`[a-z0-9][a-z0-9_-]*`) and release
/// names (`[A-Za-z0-9._-]+`) hold no space or bracket, so a head parses
/// without ambiguity; a description may carry several (one host status
/// covering several apps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: HeadKind,
    pub app: String,
    pub release: String,
}

/// The kinds of [`Head`], in the order they come first in a description
/// (what the other servers most need to read survives the 140-character
/// cut).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HeadKind {
    /// The rollout of the release is halted (a waiting host's `failure`).
    Halt,
    /// The app is down on that host (SPEC's staying-converged failures).
    Down,
    /// The host is held at another release by a local rollback.
    Held,
    /// A report about the release's run-once step.
    Once,
    /// The host waits for its rollout wave (a `pending` that is no attempt).
    Wait,
}

impl HeadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HeadKind::Halt => "halt",
            HeadKind::Down => "down",
            HeadKind::Held => "held",
            HeadKind::Once => "once",
            HeadKind::Wait => "wait",
        }
    }

    fn parse(s: &str) -> Option<HeadKind> {
        Some(match s {
            "halt" => HeadKind::Halt,
            "down" => HeadKind::Down,
            "held" => HeadKind::Held,
            "once" => HeadKind::Once,
            "wait" => HeadKind::Wait,
            _ => return None,
        })
    }
}

impl Head {
    pub fn new(kind: HeadKind, app: &str, release: &str) -> Head {
        Head {
            kind,
            app: app.to_string(),
            release: release.to_string(),
        }
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[hoist:{} {} {}]",
            self.kind.as_str(),
            self.app,
            self.release
        )
    }
}

/// The heads at the start of `description`, in order; an unknown kind or a
/// malformed head ends the list (a newer hoist's kinds are not guessed at).
pub fn heads(description: &str) -> Vec<Head> {
    let mut out = Vec::new();
    let mut rest = description;
    while let Some(after) = rest.strip_prefix("[hoist:") {
        let Some(end) = after.find(']') else { break };
        let mut words = after[..end].split(' ');
        let (Some(kind), Some(app), Some(release), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            break;
        };
        let Some(kind) = HeadKind::parse(kind) else {
            break;
        };
        if app.is_empty() || release.is_empty() {
            break;
        }
        out.push(Head::new(kind, app, release));
        rest = after[end + 1..].trim_start_matches(' ');
    }
    out
}

/// Whether `description` carries a head of `kind` about `app`'s `release`.
pub fn has_head(description: &str, kind: HeadKind, app: &str, release: &str) -> bool {
    heads(description)
        .iter()
        .any(|h| h.kind == kind && h.app == app && h.release == release)
}

/// `description` without its heads: the human text.
pub fn text_after_heads(description: &str) -> &str {
    let mut rest = description;
    for _ in heads(description) {
        let Some(end) = rest.find(']') else { break };
        rest = rest[end + 1..].trim_start_matches(' ');
    }
    rest
}

/// The most characters the heads of one description may take, so the
/// human text keeps some room.
const MAX_HEADS_CHARS: usize = 112;

/// One description from several parts (one per app, each of which may
/// start with heads): every head lifted to the front, the most important
/// first (halt, down, held, once, wait), as many as fit in
/// [`MAX_HEADS_CHARS`] whole, then the parts' texts joined with `"; "`;
/// cut to 140 characters, never inside a head. `shorten` is applied to the
/// texts only (a head's release name must stay whole).
pub fn compose<I, S>(parts: I, shorten: impl Fn(&str) -> String) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut all_heads: Vec<Head> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for p in parts {
        let p = p.as_ref();
        for h in heads(p) {
            if !all_heads.contains(&h) {
                all_heads.push(h);
            }
        }
        let text = text_after_heads(p);
        if !text.is_empty() {
            texts.push(shorten(text));
        }
    }
    all_heads.sort_by_key(|h| h.kind);
    let mut front = String::new();
    for h in all_heads {
        let h = h.to_string();
        if front.chars().count() + h.chars().count() > MAX_HEADS_CHARS {
            break;
        }
        front.push_str(&h);
    }
    let text = texts.join("; ");
    let whole = match (front.is_empty(), text.is_empty()) {
        (true, _) => text,
        (false, true) => front,
        (false, false) => format!("{front} {text}"),
    };
    truncate_description(&whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn context_template_replaces_every_placeholder() {
        assert_eq!(
            render_context("hoist/{environment}/{host}", "production", "web-1", None),
            "hoist/production/web-1"
        );
        assert_eq!(
            render_context(
                "hoist/{environment}/{host}/{app}",
                "staging",
                "web-2",
                Some("api")
            ),
            "hoist/staging/web-2/api"
        );
        assert_eq!(
            render_context("{host}-{app}", "e", "h", None),
            "h-",
            "a missing app renders as empty"
        );
        assert_eq!(
            render_context("hoist/{other}", "e", "h", None),
            "hoist/{other}"
        );
    }

    #[test]
    fn description_is_cut_at_140_chars_not_bytes() {
        let short = "web 2026.11.27-3 live in 4.2s; api unchanged";
        assert_eq!(truncate_description(short), short);

        let exact: String = "é".repeat(140);
        assert_eq!(truncate_description(&exact), exact);

        let long: String = "é".repeat(141);
        let cut = truncate_description(&long);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("ééé"));
    }

    #[test]
    fn states_serialize_lowercase() {
        let s = Status {
            sha: "a".repeat(40),
            state: State::Failure,
            context: "c".into(),
            description: "d".into(),
        };
        let json = serde_json::to_string(&s).expect("serialize");
        assert!(json.contains(r#""state":"failure""#), "{json}");
        let back: Status = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
    }

    #[test]
    fn the_latest_status_of_each_context_wins_ties_by_order() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let s = |context: &str, state, secs: u64, order| ReadStatus {
            context: context.into(),
            state,
            description: String::new(),
            at: t + Duration::from_secs(secs),
            order,
        };
        let latest = latest_per_context([
            s("b", State::Pending, 0, 1),
            s("a", State::Success, 5, 2),
            s("a", State::Pending, 9, 1),
            s("b", State::Failure, 0, 3),
            s("b", State::Success, 0, 2),
        ]);
        assert_eq!(
            latest,
            vec![s("a", State::Pending, 9, 1), s("b", State::Failure, 0, 3)],
            "a: the newest time; b: same second, the highest order"
        );
        let read = StatusRead::new(
            vec![
                s("b", State::Pending, 0, 1),
                s("a", State::Success, 5, 2),
                s("a", State::Pending, 9, 1),
                s("b", State::Failure, 0, 3),
                s("b", State::Success, 0, 2),
            ],
            t,
        );
        assert_eq!(read.statuses, latest);
        assert_eq!(read.get("b").map(|s| s.state), Some(State::Failure));
        assert_eq!(read.get("c"), None);
        let a: Vec<State> = read.history("a").map(|s| s.state).collect();
        assert_eq!(a, [State::Success, State::Pending], "oldest first");
    }

    #[test]
    fn heads_are_read_by_structure_not_by_phrase() {
        let d = format!(
            "{}{} web 1.4.0 halted: web-1 failed",
            Head::new(HeadKind::Halt, "web", "1.4.0"),
            Head::new(HeadKind::Down, "api", "2.0")
        );
        assert_eq!(
            heads(&d),
            vec![
                Head::new(HeadKind::Halt, "web", "1.4.0"),
                Head::new(HeadKind::Down, "api", "2.0")
            ]
        );
        assert!(has_head(&d, HeadKind::Halt, "web", "1.4.0"));
        assert!(!has_head(&d, HeadKind::Halt, "api", "2.0"));
        // A phrase in the text is not a head, nor is a head elsewhere.
        assert!(heads("public-api 2.0 halted: web-1 failed").is_empty());
        assert!(heads("web live; [hoist:halt web 1.4.0]").is_empty());
        assert!(!has_head(
            "[hoist:halt public-api 2.0] public-api 2.0 halted",
            HeadKind::Halt,
            "api",
            "2.0"
        ));
        // Unknown kinds and broken heads end the list.
        assert!(heads("[hoist:future web 1] x").is_empty());
        assert!(heads("[hoist:halt web] x").is_empty());
        assert!(heads("[hoist:halt web 1 2] x").is_empty());
        assert!(heads("[hoist:halt web 1").is_empty());
        assert_eq!(text_after_heads(&d), "web 1.4.0 halted: web-1 failed");
        assert_eq!(text_after_heads("no head"), "no head");
    }

    #[test]
    fn composed_descriptions_keep_every_head_whole_at_the_front() {
        let halt = format!(
            "{} api 2.0 halted: web-1 failed",
            Head::new(HeadKind::Halt, "api", "2.0")
        );
        let wait = format!(
            "{} web 1.4.0 waits for wave 1 (web-1), 4m left",
            Head::new(HeadKind::Wait, "web", "1.4.0")
        );
        let d = compose([wait.as_str(), "worker unchanged", halt.as_str()], |t| {
            t.to_string()
        });
        assert_eq!(
            heads(&d),
            vec![
                Head::new(HeadKind::Halt, "api", "2.0"),
                Head::new(HeadKind::Wait, "web", "1.4.0")
            ],
            "{d}"
        );
        assert!(
            text_after_heads(&d).starts_with("web 1.4.0 waits"),
            "texts in the order given: {d}"
        );
        // Many apps: the heads that fit, the most important first, never
        // cut; the text is what the 140-character cut shortens.
        let parts: Vec<String> = (0..8)
            .map(|i| {
                format!(
                    "{} app-number-{i} 2026.11.27-3 halted: web-1 failed",
                    Head::new(HeadKind::Halt, &format!("app-number-{i}"), "2026.11.27-3")
                )
            })
            .chain([format!(
                "{} web 1 waits",
                Head::new(HeadKind::Wait, "web", "1")
            )])
            .collect();
        let d = compose(&parts, |t| t.to_string());
        assert!(d.chars().count() <= MAX_DESCRIPTION_CHARS, "{d}");
        let hs = heads(&d);
        assert!(hs.len() >= 2, "{d}");
        assert!(
            hs.iter().all(|h| h.kind == HeadKind::Halt),
            "halts first: {d}"
        );
        assert_eq!(hs[0].app, "app-number-0");
        // Without heads, the parts are joined as they were.
        assert_eq!(compose(["a", "b"], |t| t.to_string()), "a; b");
    }

    #[test]
    fn impossible_times_are_not_plausible() {
        let date = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(plausible(date, date));
        assert!(plausible(date + Duration::from_secs(59), date));
        assert!(!plausible(date + Duration::from_secs(3600), date));
        assert!(!plausible(UNIX_EPOCH + Duration::from_secs(5), date));
        let far = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 8);
        assert!(!plausible(far, date));
    }
}
