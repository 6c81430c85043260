//! The status readers meet what a forge answers (or whoever can write
//! statuses to the repository, or to a shared `file` path), and the
//! rollout gate decides from what they read. Whatever the bytes: no panic,
//! every status kept has a time that can be true at the answer's `Date`,
//! and the gate (progress, each host's gate, the descriptions it composes)
//! runs to an answer on them.
//!
//! The first byte picks the reader (GitHub, Gitea or GitLab page, `file`
//! lines); the next four, the forge's clock (seconds after 2020); the rest
//! is the body.

#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hoist::config::{Manifest, parse_manifest};
use hoist::report::fuzzing;
use hoist::rollout::{self, Ask, CommitAsk, Contexts, Waves};
use hoist::status::{MAX_DESCRIPTION_CHARS, StatusRead, compose, heads, plausible};
use libfuzzer_sys::fuzz_target;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn manifest() -> &'static Manifest {
    static M: OnceLock<Manifest> = OnceLock::new();
    M.get_or_init(|| {
        let text = format!(
            "release: \"1.4.0\"\nartifact:\n  url: file:///a.tar.zst\n  sha256: {}\npm2:\n  - name: web\n    script: s.js\nrollout:\n  waves:\n    - {{ labels: [canary], bake: 10m }}\n    - {{ percent: 50, bake: 5m }}\n    - {{ percent: 100 }}\n  max_failures: 1\n  deadline: 30m\n",
            "a".repeat(64)
        );
        parse_manifest(Path::new("apps/web.yaml"), &text)
            .expect("the fixed manifest")
            .1
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let secs = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
    let date = UNIX_EPOCH + Duration::from_secs(1_577_836_800 + u64::from(secs));
    let body = &data[5..];
    let read = match data[0] % 4 {
        0 => fuzzing::github_page(body, date),
        1 => fuzzing::gitea_page(body, date),
        2 => fuzzing::gitlab_page(body, date),
        _ => Ok(fuzzing::file_lines(body, SHA, date)),
    };
    let (statuses, _skipped) = match read {
        Ok(r) => r,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    for s in &statuses {
        assert!(plausible(s.at, date), "an impossible time was kept: {s:?}");
        let _ = heads(&s.description);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = fuzzing::next_link(text);
        let _ = fuzzing::retry_after(text, date);
    }

    // The gate on what was read: every context a host of the app.
    let m = manifest();
    let Some(r) = m.rollout.as_ref() else { return };
    let mut hosts: Vec<(String, Vec<String>)> = statuses
        .iter()
        .filter_map(|s| s.context.strip_prefix("hoist/p/"))
        .take(20)
        .map(|h| (h.to_string(), vec!["canary".to_string()]))
        .collect();
    hosts.sort();
    hosts.dedup();
    let waves = Waves::new("web", r, &hosts);
    let asked = Ask::of(m);
    let history = vec![CommitAsk {
        commit: SHA.into(),
        ask: Some(asked.clone()),
    }];
    let mut reads = BTreeMap::new();
    reads.insert(SHA.to_string(), StatusRead::new(statuses, date));
    let input = rollout::Input {
        app: "web",
        rollout: r,
        waves: &waves,
        asked: &asked,
        history: &history,
        statuses: &reads,
        contexts: Contexts {
            template: "hoist/{environment}/{host}",
            environment: "p",
        },
        now: date,
    };
    let p = rollout::progress(&input);
    let _ = p.overall();
    let mut parts = Vec::new();
    for (h, _) in &hosts {
        match rollout::gate(&p, &waves, h, None) {
            rollout::Gate::Wait { description, .. } | rollout::Gate::Halted { description, .. } => {
                parts.push(description)
            }
            _ => {}
        }
    }
    let d = compose(&parts, |t| t.to_string());
    assert!(d.chars().count() <= MAX_DESCRIPTION_CHARS);
    let _ = SystemTime::now();
});
