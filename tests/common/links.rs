//! State and disk agree on links: what state.json records of each release
//! kept on disk (the manifest it was linked with) is exactly the links to
//! `shared/` and to `secrets/live/` its directory holds. Checked after
//! every automatic rollback of the crash and sealed-secret tests, since a
//! rollback that left the record of the failed layout makes a later deploy
//! of that layout skip its links.

use std::collections::BTreeSet;
use std::path::Path;

use super::World;

/// The links hoist makes in a release directory (to `shared/`, or to
/// `secrets/live/`), as paths inside it; no link is followed.
pub fn hoist_links(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                let t = target.to_string_lossy();
                let t = t.trim_start_matches("../");
                if t.starts_with("shared/") || t.starts_with("secrets/live/") {
                    out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

impl World {
    /// Every release state.json records with a manifest and that is on
    /// disk holds exactly that manifest's `shared` and `secrets` links.
    pub fn assert_links_agree(&self, when: &str) {
        let state = self.state_json();
        let apps = state["apps"].as_object().cloned().unwrap_or_default();
        for (app, st) in apps {
            let releases = st["releases"].as_object().cloned().unwrap_or_default();
            for (release, known) in releases {
                let m = &known["manifest"];
                let dir = self.path(&format!("srv/{app}/releases/{release}"));
                if m.is_null() || !dir.is_dir() {
                    continue;
                }
                let mut want = BTreeSet::new();
                for p in m["shared"].as_array().cloned().unwrap_or_default() {
                    let p = p.as_str().unwrap_or_default();
                    want.insert(p.trim_end_matches('/').to_string());
                }
                for s in m["secrets"].as_array().cloned().unwrap_or_default() {
                    want.insert(s["to"].as_str().unwrap_or_default().to_string());
                }
                assert_eq!(
                    hoist_links(&dir),
                    want,
                    "{when}: {app} {release}: the links on disk against state.json"
                );
            }
        }
    }
}
