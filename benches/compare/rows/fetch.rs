//! Fetch + verify + unpack of the ~200 MB node_modules-like artifact, hoist's
//! library (`Cache::fetch_and_unpack`, what a deploy runs) against what a
//! deploy script does: `curl -o`, `sha256sum`, `tar --zstd -xf`.
//!
//! Both sides start from the same state: the artifact in the page cache of
//! the source (the S3 server's directory or the file:// store), dirty pages
//! of the previous run written out (`sync`, not timed), a fresh destination.
//! The sides alternate which goes first. hoist's unpack ends with syncfs(2)
//! (its crash-safety contract); the script does not sync, so the time a
//! `sync` takes after it is reported too.

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
        || row(ctx, measure, true).map(|r| vec![r]),
    )
}

pub fn from_file(ctx: &Ctx) -> Vec<Row> {
    let measure = "same from file://";
    guarded(
        ctx,
        &[(measure, TARGET)],
        &["tar", "zstd", "sha256sum"],
        || row(ctx, measure, false).map(|r| vec![r]),
    )
}

/// What one side of one run took, by phase.
struct Run {
    total: f64,
    phases: Vec<(&'static str, f64)>,
    /// `sync` right after, not part of `total`.
    sync: f64,
}

fn row(ctx: &Ctx, measure: &str, s3: bool) -> Result<Row, String> {
    let art = generate::tree(ctx)?;
    let dir = ctx.scratch.join(if s3 { "fetch-s3" } else { "fetch-file" });
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
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
            let run = if hoist_side {
                hoist_run(ctx, &art, server.as_ref(), &work)?
            } else {
                baseline_run(ctx, &art, server.as_ref(), &work)?
            };
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
            // Nothing is removed until the whole run ends: ext4 makes
            // creating files right after deleting tens of thousands
            // measurably slower (it avoids reusing recently freed inodes),
            // which would penalise whichever side runs after a removal.
            if hoist_side {
                mine.push(run);
            } else {
                base.push(run);
            }
        }
    }

    let m = median(mine.iter().map(|r| r.total).collect());
    let b = median(base.iter().map(|r| r.total).collect());
    let b_sync = median(base.iter().map(|r| r.total + r.sync).collect());
    let ratio = m / b;
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
                "artifact: {} files, {:.0} MB unpacked, {:.0} MB as tar.zst; median of {} runs per side, alternating which goes first",
                art.files,
                art.unpacked as f64 / 1e6,
                art.bytes as f64 / 1e6,
                ctx.scale.reps
            ),
            format!("hoist: {} (unpack ends with syncfs)", phases(&mine)),
            format!("baseline: {}", phases(&base)),
            format!(
                "baseline followed by `sync` (the durability hoist gives): {} (hoist {:.2}× of it)",
                secs(b_sync),
                m / b_sync
            ),
            format!(
                "all runs, seconds: hoist {:?}, baseline {:?}",
                mine.iter()
                    .map(|r| (r.total * 100.0).round() / 100.0)
                    .collect::<Vec<_>>(),
                base.iter()
                    .map(|r| (r.total * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            ),
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
    })
}
