//! The artifacts the rows deploy, generated deterministically (a fixed-seed
//! PRNG, no randomness from the system) so every run measures the same bytes:
//!
//! - `tree`: a node_modules-like build: tens of thousands of small files of
//!   JS-like text (compressible, but not trivially: identifiers and numbers
//!   vary), some symlinks in `node_modules/.bin`, and a few large
//!   incompressible native addons and wasm blobs; about 200 MB as .tar.zst;
//! - `big`: about 1 GB of incompressible data in a few large files, for the
//!   row about memory while streaming;
//! - `small_app`: the sample app alone, a few kB.
//!
//! Every artifact is a deployable app: the sample app's `server.js` and a
//! `RELEASE` file sit at its root. Packed with `hoist::producer::pack`, and
//! kept under `target/tmp/hoist-bench/` between runs, since generating and
//! packing 1.5 GB takes longer than most rows.

use std::fs;
use std::path::{Path, PathBuf};

use crate::Ctx;

/// Bump when the generator changes, so stale artifacts are not reused.
const GENERATION: &str = "g2";

/// The sample app from example-repo: handles SIGINT gracefully and tells pm2
/// when it is ready.
pub const SERVER_JS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/example-repo/app/server.js"
));

#[derive(Clone, Debug)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    /// Size of the .tar.zst.
    pub bytes: u64,
    /// Regular files in it, and their total size.
    pub files: u64,
    pub unpacked: u64,
}

impl Artifact {
    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn meta_path(path: &Path) -> PathBuf {
        path.with_extension("meta")
    }

    fn load(path: &Path) -> Option<Artifact> {
        let meta = fs::read_to_string(Self::meta_path(path)).ok()?;
        let mut it = meta.split_whitespace();
        let sha256 = it.next()?.to_string();
        let files = it.next()?.parse().ok()?;
        let unpacked = it.next()?.parse().ok()?;
        let bytes = fs::metadata(path).ok()?.len();
        Some(Artifact {
            path: path.to_path_buf(),
            sha256,
            bytes,
            files,
            unpacked,
        })
    }

    fn save(&self) -> Result<(), String> {
        fs::write(
            Self::meta_path(&self.path),
            format!("{} {} {}\n", self.sha256, self.files, self.unpacked),
        )
        .map_err(|e| e.to_string())
    }
}

/// splitmix64: tiny, fast, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn word(rng: &mut Rng, min: u64, max: u64) -> String {
    const SYL: &[&str] = &[
        "ar", "be", "co", "de", "el", "fo", "ga", "hi", "in", "jo", "ka", "li", "mo", "ne", "or",
        "pa", "qu", "re", "si", "to", "un", "va", "we", "xi", "yo", "za", "st", "th", "ch", "pr",
    ];
    let n = min + rng.below(max - min + 1);
    (0..n)
        .map(|_| SYL[rng.below(SYL.len() as u64) as usize])
        .collect()
}

fn ident(rng: &mut Rng, vocab: &[String]) -> String {
    let a = &vocab[rng.below(vocab.len() as u64) as usize];
    if rng.below(3) == 0 {
        let b = &vocab[rng.below(vocab.len() as u64) as usize];
        let mut cs = b.chars();
        let cap: String = cs
            .next()
            .map(|c| c.to_ascii_uppercase())
            .into_iter()
            .chain(cs)
            .collect();
        format!("{a}{cap}")
    } else {
        a.clone()
    }
}

/// JS-like text of about `size` bytes.
fn js_text(rng: &mut Rng, vocab: &[String], pkg: &str, size: usize) -> String {
    let mut s = String::with_capacity(size + 200);
    s.push_str("'use strict';\n");
    while s.len() < size {
        let (a, b, c) = (ident(rng, vocab), ident(rng, vocab), ident(rng, vocab));
        let n = rng.below(100_000);
        let line = match rng.below(9) {
            0 => format!("function {a}({b}, {c}) {{\n  return {b}.{c}({n}) || {c};\n}}\n"),
            1 => format!("const {a} = require('{pkg}/lib/{b}');\n"),
            2 => format!("module.exports.{a} = {b};\n"),
            3 => format!(
                "  if ({a} === undefined) {{ throw new TypeError('{b} expects {c}, got ' + typeof {a}); }}\n"
            ),
            4 => format!("// {a} {b} {c}: see {pkg}#{n}\n"),
            5 => format!(
                "var {a}=[{n},{},{}],{b}=\"{:012x}\";\n",
                rng.below(999),
                rng.below(99_999),
                rng.next() >> 16
            ),
            6 => format!("  {a}.prototype.{b} = function ({c}) {{ return this.{c} + {n}; }};\n"),
            7 => format!("exports.{a} = async ({b}) => {{ await {c}({b}, {n}); }};\n"),
            _ => format!("    {a}: {n}, {b}: '{c}',\n"),
        };
        s.push_str(&line);
    }
    s
}

fn write_app(dir: &Path, release: &str) -> Result<(), String> {
    write_app_with(dir, release, SERVER_JS)
}

fn write_app_with(dir: &Path, release: &str, server_js: &str) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    fs::write(dir.join("server.js"), server_js).map_err(|e| e.to_string())?;
    fs::write(dir.join("RELEASE"), format!("{release}\n")).map_err(|e| e.to_string())?;
    Ok(())
}

struct Counter {
    files: u64,
    bytes: u64,
}

fn put(dir: &Path, rel: &str, data: &[u8], count: &mut Counter) -> Result<(), String> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(&p, data).map_err(|e| format!("{}: {e}", p.display()))?;
    count.files += 1;
    count.bytes += data.len() as u64;
    Ok(())
}

/// How big a node_modules-like tree is: regular files, and bytes of text
/// and of incompressible binaries in them.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub files: usize,
    pub text_bytes: u64,
    pub binary_bytes: u64,
}

/// Writes the node_modules-like tree of shape `s` into `dir`.
fn write_tree(s: Shape, dir: &Path) -> Result<Counter, String> {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let mut rng = Rng::new(0x686f_6973_7400_0001);
    let mut count = Counter { files: 0, bytes: 0 };
    write_app(dir, "tree")?;
    count.files += 2;

    // Native addons and wasm: incompressible, a few MB each.
    let blob = 4u64 << 20;
    let blobs = (s.binary_bytes / blob).max(2);
    let blob_size = (s.binary_bytes / blobs) as usize;
    let mut buf = vec![0u8; blob_size];
    for i in 0..blobs {
        rng.fill(&mut buf);
        let rel = if i % 2 == 0 {
            format!("node_modules/native-{i}/build/Release/addon.node")
        } else {
            format!("node_modules/wasm-{i}/dist/module.wasm")
        };
        put(dir, &rel, &buf, &mut count)?;
    }

    let text_files = (s.files as u64).saturating_sub(count.files).max(1);
    let avg = (s.text_bytes / text_files).max(64) as f64;
    let per_pkg = 18u64;
    let pkgs = (text_files / per_pkg).max(1);
    let mut written = 0u64;
    let mut p = 0u64;
    while written < text_files {
        let name = format!("{}-{p}", word(&mut rng, 2, 4));
        let base = if p % 7 == 3 {
            // A nested dependency, as npm leaves them.
            format!("node_modules/dep-{}/node_modules/{name}", p % pkgs)
        } else {
            format!("node_modules/{name}")
        };
        let vocab: Vec<String> = (0..48).map(|_| word(&mut rng, 2, 5)).collect();
        let files_here = per_pkg.min(text_files - written);
        for f in 0..files_here {
            // Exponentially distributed sizes: many small files, a few large.
            let size = (avg * -(1.0 - rng.unit()).ln()).clamp(40.0, avg * 40.0) as usize;
            let rel = match f {
                0 => format!("{base}/package.json"),
                1 => format!("{base}/README.md"),
                2 => format!("{base}/index.js"),
                3 => format!("{base}/bin/cli.js"),
                f if f % 4 == 0 => format!("{base}/dist/{}.min.js", vocab[f as usize % 48]),
                f if f % 4 == 1 => format!("{base}/types/{}-{f}.d.ts", vocab[f as usize % 48]),
                f => format!("{base}/lib/{}-{f}.js", vocab[f as usize % 48]),
            };
            let text = js_text(&mut rng, &vocab, &name, size);
            put(dir, &rel, text.as_bytes(), &mut count)?;
            if f == 3 {
                let full = dir.join(&rel);
                fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
                if p.is_multiple_of(10) && !base.contains("/node_modules/dep-") {
                    let bin = dir.join("node_modules/.bin");
                    fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
                    symlink(format!("../{name}/bin/cli.js"), bin.join(&name))
                        .map_err(|e| e.to_string())?;
                }
            }
            written += 1;
        }
        p += 1;
    }
    Ok(count)
}

/// Writes `bytes` of incompressible data in files of at most 128 MiB.
fn write_big(bytes: u64, dir: &Path) -> Result<Counter, String> {
    let mut rng = Rng::new(0x686f_6973_7400_0002);
    let mut count = Counter { files: 0, bytes: 0 };
    write_app(dir, "big")?;
    count.files += 2;
    let part = 128u64 << 20;
    let mut left = bytes;
    let mut i = 0;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let size = left.min(part);
        let p = dir.join(format!("data/part-{i:02}.bin"));
        fs::create_dir_all(p.parent().unwrap_or(dir)).map_err(|e| e.to_string())?;
        let mut f = std::io::BufWriter::new(fs::File::create(&p).map_err(|e| e.to_string())?);
        let mut done = 0u64;
        while done < size {
            let n = (size - done).min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            std::io::Write::write_all(&mut f, &buf[..n]).map_err(|e| e.to_string())?;
            done += n as u64;
        }
        std::io::Write::flush(&mut f).map_err(|e| e.to_string())?;
        count.files += 1;
        count.bytes += size;
        left -= size;
        i += 1;
    }
    Ok(count)
}

fn cached(
    ctx: &Ctx,
    name: &str,
    write: impl FnOnce(&Path) -> Result<Counter, String>,
) -> Result<Artifact, String> {
    let path = ctx.data.join(format!("{name}-{GENERATION}.tar.zst"));
    if let Some(a) = Artifact::load(&path) {
        return Ok(a);
    }
    let t0 = std::time::Instant::now();
    let dir = ctx.data.join(format!("{name}-build"));
    let _ = fs::remove_dir_all(&dir);
    let mut count = write(&dir)?;
    // Counted again on disk: two generated names may coincide.
    count.files = count_files(&dir);
    let sha256 = hoist::producer::pack(&dir, &path).map_err(|e| e.to_string())?;
    // The build directory is removed when the run ends (`remove_builds`),
    // not now: ext4 slows file creation for minutes after tens of thousands
    // of inodes are freed, which would tax the rows that unpack next.
    let a = Artifact {
        bytes: fs::metadata(&path).map_err(|e| e.to_string())?.len(),
        path,
        sha256,
        files: count.files,
        unpacked: count.bytes,
    };
    a.save()?;
    println!(
        "   generated {name}: {} files, {:.0} MB unpacked, {:.0} MB packed, in {:.0} s",
        a.files,
        a.unpacked as f64 / 1e6,
        a.bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(a)
}

/// Removes what generating artifacts left behind (their build directories).
pub fn remove_builds(ctx: &Ctx) {
    let Ok(entries) = fs::read_dir(&ctx.data) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().ends_with("-build") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The ~200 MB node_modules-like artifact (36,000 files).
pub fn tree(ctx: &Ctx) -> Result<Artifact, String> {
    let shape = ctx.scale.tree;
    cached(ctx, "tree", |dir| write_tree(shape, dir))
}

/// The smaller node_modules-like artifact (20,000 files, ~156 MB unpacked).
pub fn tree20k(ctx: &Ctx) -> Result<Artifact, String> {
    let shape = ctx.scale.tree20k;
    cached(ctx, "tree20k", |dir| write_tree(shape, dir))
}

/// The ~1 GB incompressible artifact.
pub fn big(ctx: &Ctx) -> Result<Artifact, String> {
    let bytes = ctx.scale.big_bytes;
    cached(ctx, "big", |dir| write_big(bytes, dir))
}

/// The sample app alone as release `release`, packed into `store`.
pub fn small_app(store: &Path, release: &str) -> Result<Artifact, String> {
    small_app_with(store, release, SERVER_JS)
}

/// `small_app` with another `server.js`.
pub fn small_app_with(store: &Path, release: &str, server_js: &str) -> Result<Artifact, String> {
    let dir = store.join(format!("build-{release}"));
    write_app_with(&dir, release, server_js)?;
    let path = store.join(format!("app-{release}.tar.zst"));
    let sha256 = hoist::producer::pack(&dir, &path).map_err(|e| e.to_string())?;
    Ok(Artifact {
        bytes: fs::metadata(&path).map_err(|e| e.to_string())?.len(),
        path,
        sha256,
        files: 2,
        unpacked: (server_js.len() + release.len() + 1) as u64,
    })
}

/// Regular files under `dir`, not following symlinks.
pub fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += 1,
                _ => {}
            }
        }
    }
    n
}
