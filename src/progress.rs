//! A one-line progress indicator on stderr for downloads and uploads.
//!
//! Shown only by the commands a person watches (`once`, `publish`, `demo`
//! call [`enable`]) and only when stderr is a terminal: the daemon, a pipe,
//! a CI log or the journal never get carriage returns and half lines. It is
//! a few lines of hand-written code rather than a progress bar crate,
//! because a byte count and a percentage are all it needs to say.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns progress lines on for this process when stderr is a terminal.
pub fn enable() {
    ENABLED.store(std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(150);

/// One transfer's progress line.
pub struct Progress {
    label: String,
    total: Option<u64>,
    done: u64,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// `label` names the transfer (`downloading web-1.4.0.tar.zst`);
    /// `total` is its size when known.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Progress {
        Progress {
            label: label.into(),
            total,
            done: 0,
            last: None,
            shown: false,
        }
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Counts `n` more bytes, redrawing now and then.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        if self.last.is_none_or(|t| t.elapsed() >= REDRAW) {
            self.last = Some(Instant::now());
            self.draw();
        }
    }

    /// Draws the final state and ends the line (if anything was shown).
    pub fn finish(&mut self) {
        if self.shown {
            self.draw();
            eprintln!();
            self.shown = false;
        }
    }

    fn draw(&mut self) {
        let line = render(&self.label, self.done, self.total);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        self.shown = true;
    }
}

/// Downloads report to a progress line (`once`, `demo`: see `setup`).
impl crate::artifact::Watch for Progress {
    fn total(&mut self, bytes: Option<u64>) {
        self.set_total(bytes);
    }
    fn advanced(&mut self, bytes: u64) {
        self.add(bytes);
    }
    fn done(&mut self) {
        self.finish();
    }
}

/// A watcher drawing a progress line per transfer (only where [`enable`]
/// turned them on, on a terminal).
pub fn watcher() -> crate::artifact::Watcher {
    crate::artifact::Watcher::new(|label| Box::new(Progress::new(label, None)))
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error path: end the line so the error message starts clean.
        if self.shown {
            eprintln!();
        }
    }
}

/// `label  3.1 MiB / 12.0 MiB  26%`, or without a total `label  3.1 MiB`.
pub fn render(label: &str, done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "{label}  {} / {}  {:>3}%",
            size(done),
            size(t),
            (done.min(t) * 100) / t
        ),
        _ => format!("{label}  {}", size(done)),
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_size_and_percentage() {
        assert_eq!(render("up", 512, None), "up  512 B");
        assert_eq!(
            render("up", 3 * 1024 * 1024, Some(12 * 1024 * 1024)),
            "up  3.0 MiB / 12.0 MiB   25%"
        );
        assert_eq!(
            render("down", 2048, Some(2048)),
            "down  2.0 KiB / 2.0 KiB  100%"
        );
    }

    #[test]
    fn nothing_is_drawn_unless_enabled() {
        // ENABLED is false in tests (stderr is captured, not a terminal).
        let mut p = Progress::new("x", Some(10));
        p.add(5);
        assert!(!p.shown);
        p.finish();
    }
}
