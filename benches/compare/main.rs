//! `cargo bench --bench compare`: hoist measured against what its users would
//! do instead, every row's two sides measured in the same run on the same
//! machine (these machines are noisy, so numbers from different runs are not
//! compared). Prints one table, `measure | hoist | baseline | target |
//! verdict`, and writes it with the details behind each number to
//! `target/tmp/hoist-bench/results.md`. docs/benchmarks.md explains the rows.
//!
//! Not part of the test suite: run under `cargo test` (which also builds
//! benches) it does nothing. Everything it starts listens on 127.0.0.1 only,
//! runs under a deadline, and is stopped when the row ends, however it ends
//! (see `procs::Guard`).
//!
//! Knobs, for developing the harness (the documented run uses none):
//! - `HOIST_BENCH_SCALE=small`: tiny artifacts, few daemons, short windows;
//! - `HOIST_BENCH_ROWS=fetch-s3,idle,...`: only these rows (names in `ROWS`);
//! - `--unpack-once ARCHIVE DEST` (after `--bench`): one fetch and unpack of
//!   ARCHIVE into DEST by hoist's library, nothing else, for profiling it
//!   (strace, perf, valgrind); see docs/benchmarks.md.
//! - `HOIST_BENCH_KEEP=1`: keep the scratch directory.

mod generate;
mod procs;
mod rows;
mod servers;
mod world;

use std::path::PathBuf;
use std::time::Instant;

/// How big the run is. `full` is the documented run.
#[derive(Clone, Debug)]
pub struct Scale {
    pub name: &'static str,
    /// The node_modules-like trees: the ~200 MB one, and the smaller one
    /// (20,000 files) that the prune row deploys.
    pub tree: generate::Shape,
    pub tree20k: generate::Shape,
    /// The big incompressible artifact.
    pub big_bytes: u64,
    /// Runs per side of the fetch rows (median and spread reported).
    pub reps: usize,
    /// Rounds of the apps-in-one-commit row (each deploys 1, 4 and 8 apps).
    pub multi_rounds: usize,
    pub idle_window_secs: u64,
    pub webhook_reps: usize,
    pub wrk_deploys: usize,
    pub many_apps: usize,
    pub daemons: usize,
    pub fleet_interval_secs: u64,
    pub fleet_jitter_secs: u64,
    pub fleet_window_secs: u64,
}

impl Scale {
    fn full() -> Scale {
        Scale {
            name: "full",
            tree: generate::Shape {
                files: 36_000,
                text_bytes: 420 << 20,
                binary_bytes: 110 << 20,
            },
            tree20k: generate::Shape {
                files: 20_000,
                text_bytes: 118 << 20,
                binary_bytes: 31 << 20,
            },
            big_bytes: 1 << 30,
            reps: 7,
            multi_rounds: 5,
            idle_window_secs: 40,
            webhook_reps: 3,
            wrk_deploys: 10,
            many_apps: 50,
            daemons: 100,
            fleet_interval_secs: 10,
            fleet_jitter_secs: 5,
            fleet_window_secs: 30,
        }
    }

    fn small() -> Scale {
        Scale {
            name: "small",
            tree: generate::Shape {
                files: 1_500,
                text_bytes: 12 << 20,
                binary_bytes: 4 << 20,
            },
            tree20k: generate::Shape {
                files: 1_000,
                text_bytes: 6 << 20,
                binary_bytes: 2 << 20,
            },
            big_bytes: 48 << 20,
            reps: 1,
            multi_rounds: 1,
            idle_window_secs: 8,
            webhook_reps: 2,
            wrk_deploys: 2,
            many_apps: 50,
            daemons: 8,
            fleet_interval_secs: 3,
            fleet_jitter_secs: 1,
            fleet_window_secs: 8,
        }
    }
}

/// Whether a row met its target.
#[derive(Clone, Debug)]
pub enum Verdict {
    Met,
    Missed,
    /// The row could not be measured here; the reason is the text.
    NotRun(String),
}

/// One line of the table, and the details printed under it.
#[derive(Clone, Debug)]
pub struct Row {
    pub measure: String,
    pub hoist: String,
    pub baseline: String,
    pub target: String,
    pub verdict: Verdict,
    pub details: Vec<String>,
}

impl Row {
    pub fn not_run(measure: &str, target: &str, why: String) -> Row {
        Row {
            measure: measure.into(),
            hoist: "—".into(),
            baseline: "—".into(),
            target: target.into(),
            verdict: Verdict::NotRun(why),
            details: vec![],
        }
    }
}

/// What every row may use.
pub struct Ctx {
    pub scale: Scale,
    pub tools: procs::Tools,
    /// The row's scratch space lives under here; removed at the end.
    pub scratch: PathBuf,
    /// Generated artifacts, kept between runs (deterministic, so reusable).
    pub data: PathBuf,
    pub rt: tokio::runtime::Runtime,
}

/// (name, row). Order: the heavy artifact rows first, while nothing else runs.
/// A row: measures on `Ctx`, gives one or more lines of the table.
type RowFn = fn(&Ctx) -> Vec<Row>;

const ROWS: &[(&str, RowFn)] = &[
    ("fetch-s3", rows::fetch::from_s3),
    ("fetch-file", rows::fetch::from_file),
    ("fetch-file-20k", rows::fetch::from_file_20k),
    ("healthz-prune", rows::pass::healthz_while_pruning),
    ("big-rss", rows::daemon::big_artifact_rss),
    ("idle", rows::daemon::idle),
    ("webhook", rows::daemon::webhook_to_live),
    ("multi-app", rows::pass::apps_in_one_commit),
    ("revert", rows::daemon::revert_to_kept),
    ("wrk", rows::load::cluster_reloads_under_load),
    ("many-apps", rows::fleet::many_apps),
    ("fleet", rows::fleet::hundred_daemons),
    ("rollout", rows::rollout::waves),
    ("rsync-ssh", rows::rsync::rsync_over_ssh),
];

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`:
    // the benchmark is not a test, so it does nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("hoist benchmarks: run them with `cargo bench --bench compare`");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--unpack-once") {
        match (args.get(at + 1), args.get(at + 2)) {
            (Some(archive), Some(dest)) => unpack_once(archive.as_ref(), dest.as_ref()),
            _ => eprintln!("--unpack-once needs an archive and a destination"),
        }
        return;
    }
    let scale = match std::env::var("HOIST_BENCH_SCALE").as_deref() {
        Ok("small") => Scale::small(),
        _ => Scale::full(),
    };
    let only: Option<Vec<String>> = std::env::var("HOIST_BENCH_ROWS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hoist-bench");
    let data = base.join(format!("data-{}", scale.name));
    std::fs::create_dir_all(&data).expect("create the bench data directory");
    let scratch = tempfile::Builder::new()
        .prefix("hoist-bench-")
        .tempdir()
        .expect("create a scratch directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start tokio");
    let ctx = Ctx {
        tools: procs::Tools::find(),
        scale,
        scratch: scratch.path().to_path_buf(),
        data,
        rt,
    };

    let started = Instant::now();
    let mut machine = procs::Machine::sample();
    println!("hoist benchmarks ({} scale)", ctx.scale.name);
    println!("{}", machine.describe());
    println!("{}", ctx.tools.describe());

    let mut results: Vec<Row> = Vec::new();
    for (name, row) in ROWS {
        if let Some(only) = &only
            && !only.iter().any(|o| o == name)
        {
            continue;
        }
        let t = Instant::now();
        println!("\n== {name}");
        machine.note_load();
        let rows = row(&ctx);
        machine.note_load();
        println!("{}", table(&rows));
        for r in &rows {
            if let Verdict::NotRun(why) = &r.verdict {
                println!("   not run: {why}");
            }
            for d in &r.details {
                println!("   {d}");
            }
        }
        println!("   ({name}: {:.0} s)", t.elapsed().as_secs_f64());
        results.extend(rows);
    }

    let total = started.elapsed();
    let mut out = String::new();
    out.push_str(&format!(
        "hoist benchmarks, {} scale, {}\n\n{}\nwhole run: {:.0} s\n\n",
        ctx.scale.name,
        procs::utc_now(),
        machine.describe(),
        total.as_secs_f64()
    ));
    out.push_str(&table(&results));
    out.push('\n');
    for r in &results {
        if r.details.is_empty() && !matches!(r.verdict, Verdict::NotRun(_)) {
            continue;
        }
        out.push_str(&format!("\n{}:\n", r.measure));
        if let Verdict::NotRun(why) = &r.verdict {
            out.push_str(&format!("- not run: {why}\n"));
        }
        for d in &r.details {
            out.push_str(&format!("- {d}\n"));
        }
    }
    generate::remove_builds(&ctx);
    println!("\n\n{out}");
    let results_file = base.join("results.md");
    if std::fs::write(&results_file, &out).is_ok() {
        println!("written to {}", results_file.display());
    }
    if std::env::var_os("HOIST_BENCH_KEEP").is_some() {
        let kept = scratch.keep();
        println!("scratch kept in {}", kept.display());
    }
}

/// One `Cache::fetch_and_unpack` of `archive` (from file://, into a fresh
/// cache beside `dest`), exactly the hoist side of the fetch rows, for
/// profiling it alone: `strace -c -f`, `perf record -g`, or
/// `valgrind --tool=callgrind`, which counts instructions whatever the load.
fn unpack_once(archive: &std::path::Path, dest: &std::path::Path) {
    let archive = match archive.canonicalize() {
        Ok(a) => a,
        Err(e) => return eprintln!("{}: {e}", archive.display()),
    };
    let sha256 = match std::fs::read(&archive) {
        Ok(bytes) => {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        }
        Err(e) => return eprintln!("{}: {e}", archive.display()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start tokio");
    let cache = hoist::artifact::Cache::new(dest.with_extension("cache"));
    let t0 = Instant::now();
    let result = rt.block_on(cache.fetch_and_unpack(
        &format!("file://{}", archive.display()),
        &sha256,
        &hoist::artifact::FetchSettings::default(),
        dest,
        &hoist::artifact::UnpackLimits::default(),
    ));
    match result {
        Ok((_, stats)) => println!(
            "unpacked {} files, {} dirs, {} links, {} bytes in {:.3} s",
            stats.files,
            stats.dirs,
            stats.links,
            stats.bytes,
            t0.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("{e}"),
    }
}

fn table(rows: &[Row]) -> String {
    let mut s =
        String::from("| measure | hoist | baseline | target | verdict |\n|---|---|---|---|---|\n");
    for r in rows {
        let verdict = match &r.verdict {
            Verdict::Met => "met".to_string(),
            Verdict::Missed => "**missed**".to_string(),
            Verdict::NotRun(_) => "not run".to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.measure, r.hoist, r.baseline, r.target, verdict
        ));
    }
    s
}
