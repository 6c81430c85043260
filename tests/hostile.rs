//! Hostile archives end to end: whoever can write to the object store (and
//! the config repo, to name the archive and its sha256) must not be able to
//! write outside an app's release or disturb the release that is live.
//!
//! Each test brings `web` live on v1 under real pm2, then commits a manifest
//! naming an archive of one hostile class. The real `hoist once` must refuse
//! it with status `error`, and afterwards:
//! - every path under `srv/` is exactly as before (same files, contents,
//!   links), so the live release is unchanged and nothing was written beside it;
//! - nothing appeared in the world's root (where `../` escapes would land);
//! - no `.staging-*` directory is left;
//! - the app still answers v1.

mod common;

use common::World;
use common::raw_tar::{RawTar, gz};
use sha2::Digest;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

impl RawTar {
    /// The harmless part of a release: an app that would run.
    fn app(version: &str) -> RawTar {
        RawTar::default()
            .file("server.js", common::APP_JS.as_bytes())
            .file("VERSION", format!("{version}\n").as_bytes())
    }
}

/// Every path under `dir` with what it is: file contents' sha256, a link's
/// target, or `dir`, plus the mode.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                walk(&p, root, out);
                "dir".to_string()
            } else {
                hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap()))
            };
            out.insert(rel, format!("{what} {:o} nlink={}", md.mode(), md.nlink()));
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `web` live on v1; `extra_config` is appended to the host config.
fn live_world(extra_config: &str) -> World {
    let mut w = World::new();
    w.extra_config = extra_config.to_string();
    w.write_config();
    // A file beside the app dirs that hardlinks and `..` paths aim at.
    std::fs::write(w.path("victim"), "untouched\n").unwrap();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    w
}

/// Publishes `artifact` as release v2 of web; returns the commit.
fn publish(w: &World, name: &str, artifact: &[u8]) -> String {
    let path = w.path(&format!("store/{name}"));
    std::fs::write(&path, artifact).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(artifact));
    w.manifest("web", "v2", &format!("file://{}", path.display()), &sha, "");
    w.commit(&format!("web v2 ({name})"))
}

/// Commits `tar` (gzipped) as web v2 and checks it is refused with status
/// `error` whose history message contains `reason`, leaving everything as it was.
fn assert_refused(extra_config: &str, name: &str, tar: Vec<u8>, reason: &str) {
    let w = live_world(extra_config);
    let srv_before = snapshot(&w.path("srv"));
    let root_before = top_level(w.dir.path());
    let c = publish(&w, name, &gz(&tar));

    let out = w.once(1);
    let (state, desc) = w.final_status(&c).expect("a status for the commit");
    assert_eq!(state, "error", "{desc}\n{out}");
    let errors: Vec<String> = w
        .history()
        .iter()
        .filter(|e| e["event"] == "error")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        errors.iter().any(|m| m.contains(reason)),
        "no error mentions {reason:?}: {errors:?}\n{out}"
    );

    // Nothing under srv/ changed: no file outside a staging dir, no staging
    // dir left, the live release byte for byte as it was.
    assert_eq!(snapshot(&w.path("srv")), srv_before, "{out}");
    assert!(w.leftovers("web").is_empty(), "{:?}", w.leftovers("web"));
    // Nothing appeared beside srv/ either (only hoist's own status file may).
    let mut root_after = top_level(w.dir.path());
    root_after.retain(|n| !root_before.contains(n) && n != "statuses.jsonl");
    assert!(
        root_after.is_empty(),
        "new files in the world: {root_after:?}"
    );
    assert_eq!(
        std::fs::read_to_string(w.path("victim")).unwrap(),
        "untouched\n"
    );
    assert_eq!(std::fs::metadata(w.path("victim")).unwrap().nlink(), 1);
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // The refusal is remembered: the next pass changes nothing either.
    let events = w.history().len();
    w.once(1);
    assert_eq!(w.history().len(), events);
    assert_eq!(snapshot(&w.path("srv")), srv_before);
}

#[test]
fn an_absolute_path_is_refused() {
    let target = std::env::temp_dir().join("hoist-escaped-abs");
    let tar = RawTar::app("v2")
        .file(target.to_str().unwrap(), b"pwned")
        .finish();
    assert_refused("", "abs.tar.gz", tar, "absolute");
    assert!(!target.exists());
}

#[test]
fn a_parent_component_is_refused() {
    let tar = RawTar::app("v2")
        .file("../../../escaped-dotdot", b"pwned")
        .finish();
    assert_refused("", "dotdot.tar.gz", tar, "..");
}

#[test]
fn a_symlink_leaving_the_release_is_refused() {
    let tar = RawTar::app("v2").symlink("up", "../../..").finish();
    assert_refused("", "symlink-out.tar.gz", tar, "outside");
}

#[test]
fn an_absolute_symlink_is_refused() {
    let tar = RawTar::app("v2").symlink("etc", "/etc").finish();
    assert_refused("", "symlink-abs.tar.gz", tar, "absolute");
}

#[test]
fn a_hardlink_leaving_the_release_is_refused() {
    let tar = RawTar::app("v2")
        .hardlink("victim-link", "../../../victim")
        .finish();
    assert_refused("", "hardlink-out.tar.gz", tar, "hardlink");
}

#[test]
fn a_write_through_a_symlink_is_refused() {
    // The link itself points inside; writing through it is refused anyway.
    let tar = RawTar::app("v2")
        .dir("lib")
        .symlink("alias", "lib")
        .file("alias/x.js", b"through the link")
        .finish();
    assert_refused("", "through-link.tar.gz", tar, "passes through");
}

#[test]
fn a_write_through_an_escaping_symlink_is_refused() {
    let tar = RawTar::app("v2")
        .symlink("up", "../../..")
        .file("up/escaped-through-link", b"pwned")
        .finish();
    assert_refused("", "through-link-out.tar.gz", tar, "passes through");
}

#[test]
fn a_device_is_refused() {
    let tar = RawTar::app("v2")
        .entry("null2", b'3', 0o666, "", b"")
        .finish();
    assert_refused("", "device.tar.gz", tar, "device");
}

#[test]
fn a_fifo_is_refused() {
    let tar = RawTar::app("v2")
        .entry("pipe", b'6', 0o644, "", b"")
        .finish();
    assert_refused("", "fifo.tar.gz", tar, "fifo");
}

#[test]
fn a_duplicate_entry_is_refused() {
    let tar = RawTar::app("v2").file("VERSION", b"v2-again\n").finish();
    assert_refused("", "duplicate.tar.gz", tar, "would replace");
}

#[test]
fn a_file_over_a_directory_is_refused() {
    let tar = RawTar::app("v2")
        .dir("lib")
        .file("lib/a.js", b"1")
        .file("lib", b"over the dir")
        .finish();
    assert_refused("", "file-over-dir.tar.gz", tar, "would replace a directory");
}

#[test]
fn a_truncated_archive_is_refused() {
    let mut tar = RawTar::app("v2").file("big.bin", &[7u8; 8192]).finish();
    tar.truncate(tar.len() - 1024 - 4096);
    assert_refused("", "truncated.tar.gz", tar, "corrupt or truncated");
}

#[test]
fn a_pax_path_trick_is_refused() {
    // An innocent name in the ustar header, an escaping one in the PAX record.
    let tar = RawTar::app("v2")
        .pax("path", b"../../../escaped-pax")
        .file("innocent.txt", b"pwned")
        .finish();
    assert_refused("", "pax.tar.gz", tar, "..");
}

#[test]
fn a_pax_linkpath_trick_is_refused() {
    let tar = RawTar::app("v2")
        .pax("linkpath", b"/etc/passwd")
        .symlink("passwd", "innocent")
        .finish();
    assert_refused("", "pax-link.tar.gz", tar, "absolute");
}

#[test]
fn a_gnu_long_name_trick_is_refused() {
    let tar = RawTar::app("v2")
        .long_name(b"../../../escaped-gnu")
        .file("innocent.txt", b"pwned")
        .finish();
    assert_refused("", "gnu-longname.tar.gz", tar, "..");
}

#[test]
fn an_archive_over_the_size_limit_is_refused() {
    let tar = RawTar::app("v2")
        .file("big.bin", &vec![0u8; 256 * 1024])
        .finish();
    assert_refused(
        "limits:\n  max_unpacked_size: 64KiB\n",
        "big.tar.gz",
        tar,
        "too large",
    );
}

#[test]
fn an_archive_over_the_entry_limit_is_refused() {
    let mut tar = RawTar::app("v2");
    for i in 0..40 {
        tar = tar.file(&format!("f{i}"), b"");
    }
    assert_refused(
        "limits:\n  max_entries: 20\n",
        "many.tar.gz",
        tar.finish(),
        "more than 20 entries",
    );
}

#[test]
fn setuid_and_setgid_bits_are_never_kept() {
    let w = live_world("");
    let tar = RawTar::app("v2")
        .entry("tool", b'0', 0o6755, "", b"#!/bin/sh\n")
        .entry("bin", b'5', 0o3777, "", b"")
        .finish();
    let c = publish(&w, "setuid.tar.gz", &gz(&tar));
    w.once(0);
    assert_eq!(w.final_status(&c).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    let tool = std::fs::metadata(w.path("srv/web/releases/v2/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o755);
    let bin = std::fs::metadata(w.path("srv/web/releases/v2/bin")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7000, 0);
}
