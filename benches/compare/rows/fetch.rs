//! Fetch + verify + unpack of the node_modules-like artifacts, hoist's
//! library (`Cache::fetch_and_unpack`, what a deploy runs) against what a
//! deploy script does: `curl -o`, `sha256sum`, `tar --zstd -xf`.
//!
//! Both sides start from the same state: the artifact in the page cache of
//! the source (the S3 server's directory or the file:// store), dirty pages
//! of the previous run written out (`sync`, not timed), a fresh destination.
//! The sides alternate which goes first, and each row runs `Scale::reps`
//! pairs: on this shared machine single runs vary by ±30%, so the row gives
//! medians, the spread of each side, and the ratio within each pair (the two
//! runs of a pair are seconds apart, so they share most of the machine's
//! load). hoist's unpack ends with syncfs(2) (its crash-safety contract);
//! the script does not sync, so the time a `sync` takes after it is
//! reported too.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hoist::artifact::{Cache, FetchSettings, UnpackLimits};

use super::guarded;
use crate::generate::{self, Artifact};
use crate::procs::{self, median, secs};
use crate::servers::S3;
use crate::{Ctx, Row, Verdict};

const TARGET: &str = "hoist ≤ 0.8 × baseline";

pub fn from_s3(ctx: &Ctx) -> Vec<Row> {
    let measure = "fetch + verify + unpack, ~200 MB tar.zst from S3";
    guarded(
        ctx,
        &[(measure, TARGET)],
        &["tar", "zstd", "sha256sum", "curl", "s3s-fs"],
        || {
            let art = generate::tree(ctx)?;
            row(ctx, measure, "fetch-s3", &art, true).map(|r| vec![r])
        },
    )
}

pub fn from_file(ctx: &Ctx) -> Vec<Row> {
    let measure = "same from file://";
    guarded(
        ctx,
        &[(measure, TARGET)],
        &["tar", "zstd", "sha256sum"],
        || {
            let art = generate::tree(ctx)?;
            row(ctx, measure, "fetch-file", &art, false).map(|r| vec![r])
        },
    )
}

pub fn from_file_20k(ctx: &Ctx) -> Vec<Row> {
    let measure = "same, smaller artifact (20,000 files) from file://";
    guarded(
        ctx,
        &[(measure, TARGET)],
        &["tar", "zstd", "sha256sum"],
        || {
            let art = generate::tree20k(ctx)?;
            row(ctx, measure, "fetch-file-20k", &art, false).map(|r| vec![r])
        },
    )
}

/// What one side of one run took, by phase.
struct Run {
    total: f64,
    phases: Vec<(&'static str, f64)>,
    /// `sync` right after, not part of `total`.
    sync: f64,
    /// The 1-minute load average when the run started.
    load: f64,
}

/// How long ext4 (this machine's root file system has no journal) avoids
/// reusing a freed inode once its inode table block is written out: 60 s
/// (`recently_deleted()` in fs/ext4/ialloc.c; 300 s more while the block is
/// dirty). Creating files inside that window skips over the freed inodes,
/// measurably slower with tens of thousands of them.
const INODE_REUSE_GUARD: Duration = Duration::from_secs(65);

fn row(ctx: &Ctx, measure: &str, name: &str, art: &Artifact, s3: bool) -> Result<Row, String> {
    let dir = ctx.scratch.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = measure_row(ctx, measure, &dir, art, s3);
    // Nothing is removed while the row runs: creating files right after
    // deleting tens of thousands would tax whichever side runs next (see
    // INODE_REUSE_GUARD). At the end the trees go, so the disk holds one
    // row's worth at a time, and the next row waits out the guard.
    let _ = std::fs::remove_dir_all(&dir);
    procs::sync();
    if ctx.scale.name == "full" {
        std::thread::sleep(INODE_REUSE_GUARD);
    }
    result
}

fn measure_row(
    ctx: &Ctx,
    measure: &str,
    dir: &Path,
    art: &Artifact,
    s3: bool,
) -> Result<Row, String> {
    let server = if s3 {
        let s3s = ctx.tools.s3s_fs.as_deref().ok_or("s3s-fs is missing")?;
        let curl = ctx.tools.curl.as_deref().ok_or("curl is missing")?;
        let server = S3::start(s3s, &dir.join("s3"))?;
        server.put(curl, &art.path, "tree.tar.zst")?;
        Some(server)
    } else {
        None
    };

    let (mut base, mut mine) = (Vec::new(), Vec::new());
    for i in 0..ctx.scale.reps {
        let hoist_first = i % 2 == 1;
        for side in 0..2 {
            let hoist_side = (side == 0) == hoist_first;
            procs::sync();
            let work = dir.join(format!(
                "run-{i}-{}",
                if hoist_side { "hoist" } else { "base" }
            ));
            std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
            let load = procs::load_average().unwrap_or(f64::NAN);
            let mut run = if hoist_side {
                hoist_run(ctx, art, server.as_ref(), &work)?
            } else {
                baseline_run(ctx, art, server.as_ref(), &work)?
            };
            run.load = load;
            if i == 0 {
                let files = generate::count_files(&work.join("dest"));
                if files != art.files {
                    return Err(format!(
                        "the {} side unpacked {files} files, the artifact has {}",
                        if hoist_side { "hoist" } else { "baseline" },
                        art.files
                    ));
                }
            }
            if hoist_side {
                mine.push(run);
            } else {
                base.push(run);
            }
        }
    }

    let totals = |runs: &[Run]| runs.iter().map(|r| r.total).collect::<Vec<f64>>();
    let m = median(totals(&mine));
    let b = median(totals(&base));
    let b_sync = median(base.iter().map(|r| r.total + r.sync).collect());
    let ratio = m / b;
    let pairs: Vec<f64> = mine
        .iter()
        .zip(&base)
        .map(|(h, b)| h.total / b.total)
        .collect();
    let phases = |runs: &[Run]| -> String {
        let names: Vec<&str> = runs[0].phases.iter().map(|p| p.0).collect();
        names
            .iter()
            .enumerate()
            .map(|(k, n)| {
                format!(
                    "{n} {}",
                    secs(median(runs.iter().map(|r| r.phases[k].1).collect()))
                )
            })
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0f64, f64::max);
        format!("{lo:.2}–{hi:.2}")
    };
    let runs = |runs: &[Run]| {
        runs.iter()
            .map(|r| format!("{:.2} (load {:.1})", r.total, r.load))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Row {
        measure: measure.into(),
        hoist: format!("{} ({ratio:.2}×)", secs(m)),
        baseline: secs(b),
        target: TARGET.into(),
        verdict: if ratio <= 0.8 {
            Verdict::Met
        } else {
            Verdict::Missed
        },
        details: vec![
            format!(
                "artifact: {} files, {:.0} MB unpacked, {:.0} MB as tar.zst; {} runs per side, alternating which goes first; medians",
                art.files,
                art.unpacked as f64 / 1e6,
                art.bytes as f64 / 1e6,
                ctx.scale.reps
            ),
            format!("hoist: {} (unpack ends with syncfs)", phases(&mine)),
            format!("baseline: {}", phases(&base)),
            format!(
                "spread, seconds: hoist {}, baseline {}; hoist ÷ baseline within each pair: median {:.2}, {}",
                spread(&totals(&mine)),
                spread(&totals(&base)),
                median(pairs.clone()),
                spread(&pairs)
            ),
            format!(
                "baseline followed by `sync` (the durability hoist gives): {} (hoist {:.2}× of it)",
                secs(b_sync),
                m / b_sync
            ),
            format!("hoist runs, seconds: {}", runs(&mine)),
            format!("baseline runs, seconds: {}", runs(&base)),
        ],
    })
}

fn timed_sync() -> f64 {
    let t = Instant::now();
    procs::sync();
    t.elapsed().as_secs_f64()
}

fn hoist_run(ctx: &Ctx, art: &Artifact, s3: Option<&S3>, work: &Path) -> Result<Run, String> {
    let (url, settings) = match s3 {
        Some(s) => (
            s.s3_url("tree.tar.zst"),
            FetchSettings {
                allow_http: true,
                s3: Some(s.settings()),
                ..FetchSettings::default()
            },
        ),
        None => (art.url(), FetchSettings::default()),
    };
    let cache = Cache::new(work.join("cache"));
    let t0 = Instant::now();
    ctx.rt
        .block_on(cache.fetch_and_unpack(
            &url,
            &art.sha256,
            &settings,
            &work.join("dest"),
            &UnpackLimits::default(),
        ))
        .map_err(|e| e.to_string())?;
    Ok(Run {
        total: t0.elapsed().as_secs_f64(),
        phases: vec![(
            "fetch, verify and unpack, overlapped",
            t0.elapsed().as_secs_f64(),
        )],
        sync: timed_sync(),
        load: f64::NAN,
    })
}

fn baseline_run(ctx: &Ctx, art: &Artifact, s3: Option<&S3>, work: &Path) -> Result<Run, String> {
    let limit = Duration::from_secs(600);
    let t = &ctx.tools;
    let mut phases = Vec::new();
    let t0 = Instant::now();
    let file = match s3 {
        Some(s) => {
            let dl = work.join("download.tar.zst");
            let url = s.object_url("tree.tar.zst");
            s.curl(
                t.curl.as_deref().ok_or("curl")?,
                &["-o".as_ref(), dl.as_os_str(), url.as_ref()],
                limit,
            )?;
            phases.push(("curl -o", t0.elapsed().as_secs_f64()));
            dl
        }
        None => art.path.clone(),
    };
    let t1 = Instant::now();
    let out = procs::run_ok(
        Command::new(t.sha256sum.as_deref().ok_or("sha256sum")?).arg(&file),
        limit,
    )?;
    if out.split_whitespace().next() != Some(art.sha256.as_str()) {
        return Err(format!("sha256sum says {out}, expected {}", art.sha256));
    }
    phases.push(("sha256sum", t1.elapsed().as_secs_f64()));
    let t2 = Instant::now();
    let dest = work.join("dest");
    std::fs::create_dir(&dest).map_err(|e| e.to_string())?;
    procs::run_ok(
        Command::new(t.tar.as_deref().ok_or("tar")?)
            .args(["--zstd", "-xf"])
            .arg(&file)
            .arg("-C")
            .arg(&dest),
        limit,
    )?;
    phases.push(("tar --zstd -xf", t2.elapsed().as_secs_f64()));
    Ok(Run {
        total: t0.elapsed().as_secs_f64(),
        phases,
        sync: timed_sync(),
        load: f64::NAN,
    })
}
