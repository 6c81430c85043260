//! Every rule of `unpack` against a hand-built hostile archive. The archives
//! are written byte by byte (the `tar` crate's builder refuses to write most
//! of them), and each refusal is checked three ways: the error says why,
//! `dest` is gone, and nothing else in the surrounding directory changed.

use super::*;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::artifact::raw_tar::{RawTar, gz, pax_record};

/// Bytes that do not compress, so a flipped byte lands in real compressed data.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn zst(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

/// A scratch directory holding the artifact, the parent of `dest`, and a
/// victim file outside `dest` that hostile archives aim at.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    artifact: PathBuf,
    dest: PathBuf,
}

impl World {
    fn new(artifact: &[u8]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        fs::create_dir(root.join("releases")).unwrap();
        fs::create_dir(root.join("outside")).unwrap();
        fs::write(root.join("outside/victim"), b"original").unwrap();
        fs::write(root.join("artifact"), artifact).unwrap();
        World {
            artifact: root.join("artifact"),
            dest: root.join("releases/.staging"),
            root,
            _tmp: tmp,
        }
    }

    fn unpack(&self, limits: &UnpackLimits) -> Result<UnpackStats, ArtifactError> {
        unpack(&self.artifact, &self.dest, limits)
    }

    /// Every path under the scratch directory with its type, mode and content.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                let desc = if meta.is_symlink() {
                    format!("link {:?}", fs::read_link(&path).unwrap())
                } else if meta.is_dir() {
                    walk(&path, root, out);
                    format!("dir {:o}", meta.mode())
                } else {
                    format!("file {:o} {:?}", meta.mode(), fs::read(&path).unwrap())
                };
                out.insert(rel, desc);
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }
}

/// Unpacks `tar` compressed both ways, expecting a refusal that `check`
/// accepts, `dest` gone, and everything around it untouched.
fn assert_refused(tar: &[u8], limits: &UnpackLimits, check: impl Fn(&ArtifactError) -> bool) {
    for (name, artifact) in [("zstd", zst(tar)), ("gzip", gz(tar))] {
        let world = World::new(&artifact);
        let before = world.snapshot();
        let err = match world.unpack(limits) {
            Ok(stats) => panic!("{name}: unpacked a hostile archive: {stats:?}"),
            Err(err) => err,
        };
        assert!(check(&err), "{name}: unexpected error: {err}");
        assert!(!err.is_transient(), "{name}: {err} should not be transient");
        assert!(
            !world.dest.exists(),
            "{name}: dest left behind after: {err}"
        );
        assert_eq!(
            world.snapshot(),
            before,
            "{name}: changes outside dest after: {err}"
        );
    }
}

fn unsafe_because(reason: &'static str) -> impl Fn(&ArtifactError) -> bool {
    move |e| matches!(e, ArtifactError::UnsafeEntry { reason: r, .. } if r.contains(reason))
}

fn corrupt(e: &ArtifactError) -> bool {
    matches!(e, ArtifactError::CorruptArchive { .. })
}

fn defaults() -> UnpackLimits {
    UnpackLimits::default()
}

#[test]
fn a_well_formed_archive_unpacks_with_its_files_links_and_modes() {
    let tar = RawTar::default()
        .dir("./")
        .dir("./app/")
        .file("./app/server.js", b"console.log('hi')\n")
        .entry("./app/run.sh", b'0', 0o755, "", b"#!/bin/sh\n")
        .file("README", b"readme")
        .symlink("./app/readme", "../README")
        .symlink("dangling", "not/yet/there")
        .hardlink("./app/again.js", "app/server.js")
        .file("deep/er/file", b"implied parents")
        .entry("private", b'5', 0o700, "", b"")
        .finish();
    for artifact in [zst(&tar), gz(&tar)] {
        let world = World::new(&artifact);
        let stats = world.unpack(&defaults()).unwrap();
        assert_eq!(
            (stats.files, stats.dirs, stats.links, stats.bytes),
            (4, 4, 3, 18 + 10 + 6 + 15)
        );
        let d = &world.dest;
        assert_eq!(
            fs::read(d.join("app/server.js")).unwrap(),
            b"console.log('hi')\n"
        );
        assert_eq!(
            fs::read(d.join("app/again.js")).unwrap(),
            b"console.log('hi')\n"
        );
        assert_eq!(fs::read(d.join("app/readme")).unwrap(), b"readme");
        assert_eq!(
            fs::read_link(d.join("dangling")).unwrap(),
            Path::new("not/yet/there")
        );
        let mode = |p: &str| fs::symlink_metadata(d.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("app/run.sh"), 0o755);
        assert_eq!(mode("README"), 0o644);
        assert_eq!(mode("deep/er"), 0o755);
        assert_eq!(mode("private"), 0o700);
        assert_eq!(mode(""), 0o755);
    }
}

#[test]
fn special_mode_bits_are_dropped_and_directories_stay_usable() {
    let tar = RawTar::default()
        .entry("ro/", b'5', 0o1555, "", b"")
        .entry("ro/suid", b'0', 0o6755, "", b"x")
        .entry("ro/none", b'0', 0o000, "", b"y")
        .finish();
    let world = World::new(&zst(&tar));
    world.unpack(&defaults()).unwrap();
    let mode = |p: &str| fs::symlink_metadata(world.dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("ro/suid"), 0o755);
    assert_eq!(mode("ro/none"), 0o000);
    // Read-only in the archive, yet filled, and owner rwx kept for pruning.
    assert_eq!(mode("ro"), 0o755);
}

#[test]
fn a_git_archive_global_header_is_skipped() {
    let tar = RawTar::default()
        .entry(
            "pax_global_header",
            b'g',
            0o666,
            "",
            &pax_record("comment", b"abc123"),
        )
        .file("a", b"a")
        .finish();
    let world = World::new(&gz(&tar));
    let stats = world.unpack(&defaults()).unwrap();
    assert_eq!(stats.files, 1);
    assert!(!world.dest.join("pax_global_header").exists());
}

#[test]
fn long_names_from_gnu_and_pax_records_are_used_and_validated() {
    let long = format!("{}/file", "d".repeat(150));
    let tar = RawTar::default()
        .long_name(long.as_bytes())
        .file("truncated-name", b"gnu")
        .pax("path", b"pax/named")
        .file("ignored-name", b"pax")
        .finish();
    let world = World::new(&zst(&tar));
    world.unpack(&defaults()).unwrap();
    assert_eq!(fs::read(world.dest.join(&long)).unwrap(), b"gnu");
    assert_eq!(fs::read(world.dest.join("pax/named")).unwrap(), b"pax");

    let hostile = format!("{}/../../../escaped", "d".repeat(150));
    let tar = RawTar::default()
        .long_name(hostile.as_bytes())
        .file("innocent", b"x")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("`..`"));

    let tar = RawTar::default()
        .pax("path", b"/tmp/escaped")
        .file("innocent", b"x")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("absolute"));

    let tar = RawTar::default()
        .pax("path", b"a\0b")
        .file("innocent", b"x")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("NUL"));

    let tar = RawTar::default()
        .pax("linkpath", b"../../outside")
        .symlink("innocent", "fine")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("outside the release"));
}

#[test]
fn absolute_paths_are_refused() {
    let world = World::new(b"");
    let target = world.root.join("outside/escaped");
    let tar = RawTar::default()
        .file(target.to_str().unwrap(), b"pwned")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("absolute"));
    let tar = RawTar::default().dir("/").finish();
    assert_refused(&tar, &defaults(), unsafe_because("absolute"));
}

#[test]
fn parent_components_are_refused() {
    for name in [
        "../escaped",
        "a/../../escaped",
        "./..",
        "a/b/../../../outside/victim",
        "..",
    ] {
        let tar = RawTar::default()
            .file("a/b/ok", b"ok")
            .file(name, b"pwned")
            .finish();
        assert_refused(&tar, &defaults(), unsafe_because("`..`"));
    }
    // Even when it would stay inside, `..` is refused outright.
    let tar = RawTar::default().file("a/../b", b"x").finish();
    assert_refused(&tar, &defaults(), unsafe_because("`..`"));
}

#[test]
fn devices_fifos_and_other_types_are_refused() {
    for (kind, reason) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "fifo"),
        (b'S', "sparse"),
        (b'V', "not a file, directory or link"),
        (b'M', "not a file, directory or link"),
        (b'Z', "not a file, directory or link"),
    ] {
        let tar = RawTar::default()
            .file("ok", b"ok")
            .entry("odd", kind, 0o644, "", b"")
            .finish();
        assert_refused(&tar, &defaults(), unsafe_because(reason));
    }
}

#[test]
fn symlinks_leaving_the_release_are_refused() {
    let cases: &[&[(&str, &str)]] = &[
        &[("abs", "/etc/passwd")],
        &[("up", "..")],
        &[("a/b/up", "../../../outside")],
        &[("a/up", "./../../x")],
        // By text `s/s/s/..` is inside; `s` is the release root, so it is not.
        &[("s", "."), ("climb", "s/s/s/..")],
        // Declared before the link it goes through.
        &[("via", "inner/x"), ("inner", "../outside")],
        &[("loop1", "loop2"), ("loop2", "loop1")],
        &[("empty", "")],
    ];
    for links in cases {
        let mut tar = RawTar::default().file("ok", b"ok");
        for (name, target) in *links {
            tar = tar.symlink(name, target);
        }
        assert_refused(
            &tar.finish(),
            &defaults(),
            |e| matches!(e, ArtifactError::UnsafeEntry { reason, .. } if reason.contains("symlink")),
        );
    }
}

#[test]
fn writes_through_a_symlink_are_refused() {
    // A link that stays inside is fine, but nothing may be written through it.
    let tar = RawTar::default()
        .dir("real/")
        .symlink("link", "real")
        .file("link/file", b"through")
        .finish();
    assert_refused(
        &tar,
        &defaults(),
        unsafe_because("passes through a symlink"),
    );
    // The classic: a link out, then a file "inside" it.
    let tar = RawTar::default()
        .symlink("out", "../../outside")
        .file("out/victim", b"pwned")
        .finish();
    assert_refused(&tar, &defaults(), |e| {
        matches!(e, ArtifactError::UnsafeEntry { .. })
    });
    // Or a directory through it.
    let tar = RawTar::default()
        .symlink("link", ".")
        .dir("link/sub/")
        .finish();
    assert_refused(
        &tar,
        &defaults(),
        unsafe_because("passes through a symlink"),
    );
    // Or a file replacing the link itself.
    let tar = RawTar::default()
        .symlink("link", "a")
        .file("link", b"x")
        .finish();
    assert_refused(&tar, &defaults(), unsafe_because("would replace a symlink"));
}

#[test]
fn hardlinks_must_name_an_earlier_regular_file() {
    let cases: &[(RawTar, &str)] = &[
        (RawTar::default().hardlink("h", "../outside/victim"), "`..`"),
        (RawTar::default().hardlink("h", "/etc/passwd"), "absolute"),
        (
            RawTar::default().hardlink("h", "later").file("later", b"x"),
            "not an earlier",
        ),
        (RawTar::default().hardlink("h", "missing"), "not an earlier"),
        (
            RawTar::default().dir("d/").hardlink("h", "d"),
            "not an earlier",
        ),
        (
            RawTar::default()
                .symlink("s", "f")
                .file("f", b"x")
                .hardlink("h", "s"),
            "not an earlier",
        ),
        (
            RawTar::default()
                .file("f", b"x")
                .symlink("s", ".")
                .hardlink("h", "s/f"),
            "not an earlier",
        ),
        (RawTar::default().hardlink("h", ""), "empty"),
    ];
    for (tar, reason) in cases {
        let tar = tar.clone().finish();
        assert_refused(&tar, &defaults(), unsafe_because(reason));
    }
}

#[test]
fn duplicates_and_type_clashes_are_refused() {
    let cases: &[(RawTar, &str)] = &[
        (
            RawTar::default().file("a", b"1").file("a", b"2"),
            "would replace a file",
        ),
        (
            RawTar::default().file("./a", b"1").file("a", b"2"),
            "would replace a file",
        ),
        (RawTar::default().dir("d/").dir("d/"), "appears twice"),
        (
            RawTar::default().file("a", b"1").dir("a/"),
            "directory over a file",
        ),
        (
            RawTar::default().dir("a/").file("a", b"1"),
            "would replace a directory",
        ),
        (
            RawTar::default().file("a/b", b"1").file("a", b"1"),
            "would replace a directory",
        ),
        (
            RawTar::default().file("a", b"1").file("a/b", b"1"),
            "passes through a file",
        ),
        (
            RawTar::default().file("a", b"1").symlink("a", "b"),
            "would replace a file",
        ),
        (
            RawTar::default().file("a", b"1").hardlink("a", "a"),
            "would replace a file",
        ),
        (
            RawTar::default().symlink("a", "b").dir("a/"),
            "directory over a symlink",
        ),
        (
            RawTar::default().dir("a/").symlink("a", "."),
            "would replace a directory",
        ),
        (
            RawTar::default().file(".", b"1"),
            "root can only be a directory",
        ),
        (RawTar::default().file("a/", b"1"), "ends with `/`"),
    ];
    for (tar, reason) in cases {
        let tar = tar.clone().finish();
        assert_refused(&tar, &defaults(), unsafe_because(reason));
    }
}

#[test]
fn an_implied_directory_may_be_named_later_once() {
    let tar = RawTar::default()
        .file("a/b", b"1")
        .entry("a/", b'5', 0o750, "", b"")
        .finish();
    let world = World::new(&zst(&tar));
    world.unpack(&defaults()).unwrap();
    let mode = fs::metadata(world.dest.join("a")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o750);
}

#[test]
fn truncated_archives_are_refused() {
    let tar = RawTar::default()
        .file("a", &[b'a'; 5000])
        .file("b", &[b'b'; 70_000])
        .finish();
    // Compressed streams cut short.
    for compressed in [zst(&tar), gz(&tar)] {
        for cut in [compressed.len() / 2, compressed.len() - 1] {
            let world = World::new(&compressed[..cut]);
            let before = world.snapshot();
            let err = world.unpack(&defaults()).unwrap_err();
            assert!(corrupt(&err), "{err}");
            assert!(!world.dest.exists());
            assert_eq!(world.snapshot(), before);
        }
    }
    // A complete compressed stream around a tar cut in a file's data...
    let cut_in_data = &tar[..512 + 1000];
    assert_refused(cut_in_data, &defaults(), corrupt);
    // ...in a header...
    let cut_in_header = &tar[..512 + 5120 + 100];
    assert_refused(cut_in_header, &defaults(), corrupt);
    // ...or exactly between entries, with no end-of-archive marker.
    let unterminated = RawTar::default().file("a", b"a").unterminated();
    assert_refused(&unterminated, &defaults(), |e| {
        corrupt(e) && e.to_string().contains("end-of-archive")
    });
    // A long-name record for an entry that never comes.
    let orphan = RawTar::default()
        .long_name(b"x".repeat(200).as_slice())
        .finish();
    assert_refused(&orphan, &defaults(), corrupt);
}

#[test]
fn corrupt_streams_and_headers_are_refused() {
    let tar = RawTar::default().file("a", &noise(100_000)).finish();
    // zstd only notices damage to data blocks when the frame has a checksum,
    // as `pack` writes it; otherwise the artifact's sha256 is what catches it.
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&tar).unwrap();
    let checked_zst = enc.finish().unwrap();
    for mut compressed in [checked_zst, gz(&tar)] {
        let mid = compressed.len() / 2;
        for b in &mut compressed[mid..mid + 8] {
            *b ^= 0x5a;
        }
        let world = World::new(&compressed);
        let before = world.snapshot();
        let err = world.unpack(&defaults()).unwrap_err();
        assert!(corrupt(&err), "{err}");
        assert!(!world.dest.exists());
        assert_eq!(world.snapshot(), before);
    }
    // A tar header whose checksum does not match.
    let mut tar = RawTar::default().file("a", b"x").finish();
    tar[0] = b'b';
    assert_refused(&tar, &defaults(), corrupt);
}

#[test]
fn other_formats_are_refused() {
    let tar = RawTar::default().file("a", b"x").finish();
    for (bytes, detail) in [
        (tar.clone(), "starts with the bytes 61000000"),
        (Vec::new(), "empty"),
        (b"PK\x03\x04zip".to_vec(), "504b0304"),
    ] {
        let world = World::new(&bytes);
        let err = world.unpack(&defaults()).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::UnsupportedFormat { detail: d } if d.contains(detail)),
            "{err}"
        );
        assert!(!world.dest.exists());
    }
}

#[test]
fn size_limits_are_enforced_while_unpacking() {
    let limits = UnpackLimits {
        max_bytes: 1000,
        max_entries: 5,
    };
    let too_large = |e: &ArtifactError| matches!(e, ArtifactError::TooLarge { .. });
    // Many files, each small.
    let mut tar = RawTar::default();
    for i in 0..4 {
        tar = tar.file(&format!("f{i}"), &[0; 300]);
    }
    assert_refused(&tar.finish(), &limits, too_large);
    // One file announcing more than it has: refused on the header alone.
    let mut lying = RawTar::default();
    lying.header(b"big", b'0', 1 << 40, 0o644, b"");
    assert_refused(&lying.finish(), &limits, too_large);
    // Too many entries.
    let mut tar = RawTar::default();
    for i in 0..6 {
        tar = tar.file(&format!("f{i}"), b"");
    }
    assert_refused(&tar.finish(), &limits, too_large);
    // Parents made on the way count as entries too.
    let tar = RawTar::default().file("a/b/c/d/e/f", b"").finish();
    assert_refused(&tar, &limits, too_large);
    // Data hidden in a directory entry counts.
    let tar = RawTar::default()
        .entry("d/", b'5', 0o755, "", &[1; 2000])
        .finish();
    assert_refused(&tar, &limits, too_large);
    // Exactly at the limits is fine.
    let mut tar = RawTar::default();
    for i in 0..5 {
        tar = tar.file(&format!("f{i}"), &[0; 200]);
    }
    let world = World::new(&zst(&tar.finish()));
    let stats = world.unpack(&limits).unwrap();
    assert_eq!((stats.files, stats.bytes), (5, 1000));
}

#[test]
fn huge_metadata_records_are_refused_before_they_fill_memory() {
    let tar = RawTar::default()
        .pax("comment", &vec![b'x'; 2 << 20])
        .file("a", b"x")
        .finish();
    assert_refused(&tar, &defaults(), |e| {
        corrupt(e) && e.to_string().contains("headers")
    });
    let tar = RawTar::default()
        .long_name(&vec![b'n'; 2 << 20])
        .file("a", b"x")
        .finish();
    assert_refused(&tar, &defaults(), corrupt);
    // Megabytes of junk after the end of the archive.
    let mut tar = RawTar::default().file("a", b"x").finish();
    tar.extend(std::iter::repeat_n(1, 2 << 20));
    assert_refused(&tar, &defaults(), corrupt);
}

#[test]
fn an_existing_destination_is_left_alone() {
    let world = World::new(&zst(&RawTar::default().file("a", b"x").finish()));
    fs::create_dir(&world.dest).unwrap();
    fs::write(world.dest.join("keep"), b"mine").unwrap();
    let err = world.unpack(&defaults()).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Io { error, .. } if error.kind() == io::ErrorKind::AlreadyExists)
    );
    assert_eq!(fs::read(world.dest.join("keep")).unwrap(), b"mine");
}

#[test]
fn a_missing_archive_is_an_io_error_and_creates_nothing() {
    let world = World::new(b"");
    let err = unpack(&world.root.join("nope"), &world.dest, &defaults()).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!world.dest.exists());
}

/// Archives from the real tools people will use, when they are installed.
#[test]
fn archives_from_gnu_tar_unpack() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("app/node_modules/.bin")).unwrap();
    fs::write(s.join("app/server.js"), b"require('x')").unwrap();
    fs::write(s.join("app/node_modules/x.js"), b"module.exports = 1").unwrap();
    std::os::unix::fs::symlink("../x.js", s.join("app/node_modules/.bin/x")).unwrap();
    fs::hard_link(s.join("app/server.js"), s.join("app/same.js")).unwrap();
    let long = "l".repeat(120);
    fs::write(s.join("app").join(&long), b"long").unwrap();
    for flags in [["--zstd", "-cf"], ["--gzip", "-cf"]] {
        let out = s.join("out.tar");
        let status = std::process::Command::new("tar")
            .args(flags)
            .arg(&out)
            .args(["-C", s.to_str().unwrap(), "--format=gnu", "./app"])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this test compares with GNU tar `{}`: install tar with zstd and gzip (CI has them)",
            flags[0]
        );
        let world = World::new(&fs::read(&out).unwrap());
        let stats = world.unpack(&defaults()).unwrap();
        assert_eq!((stats.files, stats.links), (3, 2), "{flags:?}");
        let d = world.dest.join("app");
        assert_eq!(
            fs::read(d.join("node_modules/.bin/x")).unwrap(),
            b"module.exports = 1"
        );
        assert_eq!(fs::read(d.join("same.js")).unwrap(), b"require('x')");
        assert_eq!(fs::read(d.join(&long)).unwrap(), b"long");
    }
}

/// Hands out `data` up to `fail_at`, then fails as a broken disk or
/// download would.
struct Breaks {
    data: Vec<u8>,
    at: usize,
    fail_at: usize,
}

impl Read for Breaks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.fail_at {
            return Err(io::Error::other("the source broke"));
        }
        let n = buf
            .len()
            .min(self.fail_at - self.at)
            .min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_source_that_fails_mid_stream_is_a_local_fault_not_a_bad_archive() {
    let big = noise(1 << 20);
    let tar = RawTar::default()
        .file("a.bin", &big)
        .file("b.bin", &big)
        .finish();
    let archive = zst(&tar);
    let world = World::new(b"");
    let source = Breaks {
        fail_at: archive.len() / 2,
        data: archive,
        at: 0,
    };
    let err = unpack_reader(source, "the test stream", &world.dest, &defaults()).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("the test stream"), "{err}");
    assert!(!world.dest.exists());
}

#[test]
fn a_large_archive_streams_through_the_decompressing_thread_intact() {
    // Many chunks of the decompressing thread, and files that straddle them.
    let mut tar = RawTar::default().dir("d");
    let mut expected = Vec::new();
    for i in 0..40 {
        let data = noise(DECODED_CHUNK / 3 + i * 997);
        tar = tar.file(&format!("d/f{i}"), &data);
        expected.push(data);
    }
    let world = World::new(&zst(&tar.finish()));
    let stats = world.unpack(&defaults()).unwrap();
    assert_eq!(stats.files, 40);
    for (i, data) in expected.iter().enumerate() {
        assert_eq!(
            &fs::read(world.dest.join(format!("d/f{i}"))).unwrap(),
            data,
            "d/f{i}"
        );
    }
}

#[test]
fn modes_the_umask_would_strip_are_kept() {
    // Group-writable modes lose bits to a umask of 022 when given at
    // creation; they must still end exactly as the archive says.
    let tar = RawTar::default()
        .entry("shared/", b'5', 0o775, "", b"")
        .entry("shared/notes", b'0', 0o664, "", b"small")
        .entry(
            "shared/big.bin",
            b'0',
            0o666,
            "",
            &noise(HANDED_OFF_MAX as usize + 1),
        )
        .entry("shared/run", b'0', 0o775, "", b"#!/bin/sh\n")
        .entry("plain/", b'5', 0o755, "", b"")
        .entry("plain/file", b'0', 0o644, "", b"x")
        .finish();
    let world = World::new(&zst(&tar));
    world.unpack(&defaults()).unwrap();
    let mode = |p: &str| fs::symlink_metadata(world.dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("shared"), 0o775);
    assert_eq!(mode("shared/notes"), 0o664);
    assert_eq!(mode("shared/big.bin"), 0o666);
    assert_eq!(mode("shared/run"), 0o775);
    assert_eq!(mode("plain"), 0o755);
    assert_eq!(mode("plain/file"), 0o644);
    assert_eq!(mode(""), 0o755);
}

#[test]
fn files_from_the_writing_threads_and_the_reading_one_all_arrive_intact() {
    // Small files (handed to the writing threads) in many directories, in
    // runs and interleaved, big ones (streamed by the reading thread) among
    // them, and hardlinks to both kinds, made before their files could
    // possibly be written had they not waited.
    let mut tar = RawTar::default();
    let mut expected = Vec::new();
    for i in 0..600usize {
        let dir = if i % 50 < 30 { i / 50 } else { i % 7 };
        let size = match i % 97 {
            0 => HANDED_OFF_MAX as usize + 1 + i,
            1 => HANDED_OFF_MAX as usize,
            _ => (i * 131) % 3000,
        };
        let data = noise(size + 1)[1..].to_vec();
        let path = format!("pkg{dir}/f{i}");
        tar = tar.file(&path, &data);
        if i % 101 == 0 || i % 97 == 0 {
            let link = format!("links/l{i}");
            tar = tar.hardlink(&link, &path);
            expected.push((link, data.clone()));
        }
        expected.push((path, data));
    }
    let world = World::new(&zst(&tar.finish()));
    let stats = world.unpack(&defaults()).unwrap();
    assert_eq!(stats.files, 600);
    for (path, data) in &expected {
        assert_eq!(&fs::read(world.dest.join(path)).unwrap(), data, "{path}");
    }
}

#[test]
fn a_file_that_cannot_be_created_fails_the_unpack_and_leaves_nothing() {
    // A path within the archive's limits (4095 bytes) but over the kernel's
    // once under `dest`: its directories can be made, and only creating the
    // file fails, on a writing thread for a small file, on the reading
    // thread for a big one.
    let dirs = vec!["d".repeat(250); 16].join("/");
    let name = "n".repeat(4090 - dirs.len() - 1);
    let path = format!("{dirs}/{name}");
    for size in [10, HANDED_OFF_MAX as usize + 1] {
        let mut tar = RawTar::default();
        for i in 0..100 {
            tar = tar.file(&format!("d{}/f{i}", i % 3), b"fine");
        }
        let tar = tar
            .long_name(path.as_bytes())
            .file("truncated", &noise(size))
            .file("after", b"more")
            .finish();
        let world = World::new(&zst(&tar));
        let err = world.unpack(&defaults()).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::Io { context, error }
                if context.contains(&name) && error.raw_os_error() == Some(libc::ENAMETOOLONG)),
            "{err}"
        );
        assert!(!world.dest.exists(), "size {size}");
    }
}
