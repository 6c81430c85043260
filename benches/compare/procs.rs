//! Processes the harness starts and what it reads about them: the tools it
//! needs, a guard that stops a child whatever happens, commands run under a
//! deadline, and memory and CPU read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The programs the rows run. `None`: not found; the rows that need it say so.
#[derive(Debug, Clone)]
pub struct Tools {
    pub hoist: PathBuf,
    pub pm2: Option<PathBuf>,
    pub s3s_fs: Option<PathBuf>,
    pub wrk: Option<PathBuf>,
    pub curl: Option<PathBuf>,
    pub git: Option<PathBuf>,
    pub node: Option<PathBuf>,
    pub tar: Option<PathBuf>,
    pub zstd: Option<PathBuf>,
    pub sha256sum: Option<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn from_env_or(vars: &[&str], local: &str, name: &str) -> Option<PathBuf> {
    for v in vars {
        if let Some(p) = std::env::var_os(v).filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            return if p.components().count() > 1 {
                Some(p)
            } else {
                on_path(&p.to_string_lossy())
            };
        }
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(local);
    if local.is_file() {
        return Some(local);
    }
    on_path(name)
}

impl Tools {
    pub fn find() -> Tools {
        Tools {
            hoist: PathBuf::from(env!("CARGO_BIN_EXE_hoist")),
            pm2: from_env_or(
                &["HOIST_BENCH_PM2", "HOIST_TEST_PM2"],
                ".tools/pm2/node_modules/.bin/pm2",
                "pm2",
            ),
            s3s_fs: from_env_or(
                &["HOIST_BENCH_S3S", "HOIST_TEST_S3S"],
                ".tools/s3s/bin/s3s-fs",
                "s3s-fs",
            ),
            wrk: on_path("wrk"),
            curl: on_path("curl"),
            git: on_path("git"),
            node: on_path("node"),
            tar: on_path("tar"),
            zstd: on_path("zstd"),
            sha256sum: on_path("sha256sum"),
        }
    }

    pub fn describe(&self) -> String {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "MISSING".into())
        };
        format!(
            "tools: hoist {}, pm2 {}, s3s-fs {}, wrk {}, curl {}",
            self.hoist.display(),
            show(&self.pm2),
            show(&self.s3s_fs),
            show(&self.wrk),
            show(&self.curl)
        )
    }

    /// The first of `needed` that is missing, as a reason not to run a row.
    pub fn missing(&self, needed: &[&str]) -> Option<String> {
        for n in needed {
            let have = match *n {
                "pm2" => self.pm2.is_some(),
                "s3s-fs" => self.s3s_fs.is_some(),
                "wrk" => self.wrk.is_some(),
                "curl" => self.curl.is_some(),
                "git" => self.git.is_some(),
                "node" => self.node.is_some(),
                "tar" => self.tar.is_some(),
                "zstd" => self.zstd.is_some(),
                "sha256sum" => self.sha256sum.is_some(),
                _ => true,
            };
            if !have {
                return Some(format!(
                    "{n} is not installed (scripts/bench.sh installs it)"
                ));
            }
        }
        None
    }
}

/// The machine, and the load average seen while the rows ran.
pub struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_mb: u64,
    kernel: String,
    loads: Vec<f64>,
}

impl Machine {
    pub fn sample() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut m = Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_mb,
            kernel,
            loads: vec![],
        };
        m.note_load();
        m
    }

    pub fn note_load(&mut self) {
        if let Some(l) = load_average() {
            self.loads.push(l);
        }
    }

    pub fn describe(&self) -> String {
        let (lo, hi) = self
            .loads
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), l| (lo.min(*l), hi.max(*l)));
        format!(
            "machine: {} CPUs ({}), {} MB memory, Linux {}; 1-minute load average {:.2}..{:.2} \
             between rows (at start {:.2})",
            self.cpus,
            self.cpu_model,
            self.mem_mb,
            self.kernel,
            if self.loads.is_empty() { 0.0 } else { lo },
            hi,
            self.loads.first().copied().unwrap_or(0.0)
        )
    }
}

pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn utc_now() -> String {
    hoist::state::now_rfc3339()
}

/// A child process that is stopped (SIGTERM, then SIGKILL after 20 s) when
/// the guard is dropped, so no row leaves anything running.
pub struct Guard {
    pub name: String,
    child: Option<Child>,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Guard, String> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Guard {
            name: name.to_string(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends `signal` and waits up to `limit` for the exit; SIGKILL after that.
    pub fn stop_with(&mut self, signal: Signal, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, signal);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if t0.elapsed() > limit {
                eprintln!("   {} did not stop within {limit:?}; killing it", self.name);
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with(Signal::SIGTERM, Duration::from_secs(20))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion with stdout and stderr captured, killing it if it
/// takes longer than `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            Err(format!("{shown} did not finish within {limit:?}"))
        }
    }
}

/// `run`, failing unless the command exits 0; returns its stdout.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = run(cmd, limit)?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A value in kB from /proc/<pid>/status (`VmRSS`, `VmHWM`, `RssAnon`, ...).
pub fn status_kb(pid: i32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time (user + system, all threads, dead ones included) of a live
/// process, from /proc/<pid>/stat.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Waits until `pred` holds, checking every `every`; false after `limit`.
pub fn wait_until(limit: Duration, every: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if pred() {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// `sync`, so the dirty pages of one measurement are not written during the next.
pub fn sync() {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A plain HTTP/1.0 GET on 127.0.0.1; None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status: u16 = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Some((status, body))
}

pub fn secs(s: f64) -> String {
    if s < 0.01 {
        format!("{:.2} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

pub fn mib_kb(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Runs `cmd` (output discarded) and returns its own CPU seconds and peak
/// RSS in kB, from wait4(2), which counts that child and nothing else.
pub fn run_rusage(cmd: &mut Command) -> Result<(f64, u64), String> {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child and writes into locals we own.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{shown} failed"));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64))
}

/// `hoist_polls_total{result="ok"}` from a daemon's /metrics.
pub fn polls_ok(port: u16) -> Option<u64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with("hoist_polls_total{result=\"ok\"}"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// Resident kB per mapped file (`[anon]` for the rest) from /proc/<pid>/smaps,
/// largest first.
pub fn rss_by_mapping(pid: i32) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::from("[anon]");
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: address perms offset dev inode [path].
            current = line
                .split_whitespace()
                .nth(5)
                .map(|p| {
                    if p.starts_with('/') {
                        Path::new(p)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| p.to_string())
                    } else {
                        p.to_string()
                    }
                })
                .unwrap_or_else(|| "[anon]".into());
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kb: u64 = v
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            *by.entry(current.clone()).or_default() += kb;
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// (utime, stime, cutime, cstime, ppid) of a live process, in seconds, from
/// /proc/<pid>/stat: its own CPU, and that of its children it has reaped.
fn stat_cpu(pid: i32) -> Option<(f64, f64, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| -> Option<f64> { fields.get(i)?.parse().ok() };
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let own = (num(11)? + num(12)?) / ticks;
    let reaped = (num(13)? + num(14)?) / ticks;
    Some((own, reaped, fields.get(1)?.parse().ok()?))
}

/// CPU seconds of a process tree: `pid` and its live descendants, each with
/// the children it has reaped (so processes that came and went, like the pm2
/// commands hoist runs, count too): (the process itself, reaped children,
/// live descendants).
pub fn tree_cpu(pid: i32) -> (f64, f64, f64) {
    let Some((own, reaped, _)) = stat_cpu(pid) else {
        return (0.0, 0.0, 0.0);
    };
    let mut parent_of: Vec<(i32, i32, f64)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((o, r, ppid)) = stat_cpu(p) {
                parent_of.push((p, ppid, o + r));
            }
        }
    }
    let mut tree = vec![pid];
    let mut live = 0.0;
    let mut i = 0;
    while i < tree.len() {
        let at = tree[i];
        for (p, ppid, cpu) in &parent_of {
            if *ppid == at && !tree.contains(p) {
                tree.push(*p);
                live += cpu;
            }
        }
        i += 1;
    }
    (own, reaped, live)
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
pub fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
