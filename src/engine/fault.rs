//! Test hooks at the named steps of a deploy and of every other change of
//! what runs, so the crash-consistency tests can stop hoist at each one.
//!
//! `HOIST_FAULT_AT=<point>` aborts the process (as a crash would) right
//! after that point; `HOIST_FAIL_AT=<point>` makes the step at that point
//! fail with an I/O error instead (a full disk, a read-only file system).
//! The points of a deploy are its `Step` names; the same steps of an
//! automatic rollback and of `hoist rollback` are prefixed with
//! `auto-rollback-` and `local-rollback-`.

/// The named steps of one deploy, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetched (and, without trusted keys, unpacked into staging).
    Download,
    /// The shared and secret links made in the staging directory.
    Link,
    /// The staging directory renamed into `releases/`.
    Unpack,
    /// `before_activate` hooks run.
    Hooks,
    /// `current` (and `secrets/live`) point at the new pair.
    Swap,
    /// pm2 reloaded.
    Reload,
    /// The health gate decided.
    Health,
    /// The outcome recorded in state.json.
    StateWrite,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Download => "download",
            Step::Link => "link",
            Step::Unpack => "unpack",
            Step::Hooks => "hooks",
            Step::Swap => "swap",
            Step::Reload => "reload",
            Step::Health => "health",
            Step::StateWrite => "state-write",
        }
    }
}

/// Where to crash or fail, if anywhere: read from the environment at the
/// edge (`setup`), set directly by the engine's own tests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// `HOIST_FAULT_AT`: abort right after this point.
    pub abort_at: Option<String>,
    /// `HOIST_FAIL_AT`: fail the step at this point.
    pub fail_at: Option<String>,
}

impl Faults {
    pub fn from_env() -> Faults {
        Faults {
            abort_at: std::env::var("HOIST_FAULT_AT").ok(),
            fail_at: std::env::var("HOIST_FAIL_AT").ok(),
        }
    }

    /// Aborts the process when `abort_at` names this point.
    pub fn point(&self, prefix: &str, step: Step) {
        if let Some(v) = &self.abort_at
            && v.strip_prefix(prefix) == Some(step.name())
        {
            eprintln!("hoist: HOIST_FAULT_AT={v}: aborting after step {v}");
            std::process::abort();
        }
    }

    /// An I/O error when `fail_at` names this point.
    pub fn fail(&self, prefix: &str, step: Step) -> std::io::Result<()> {
        match &self.fail_at {
            Some(v) if v.strip_prefix(prefix) == Some(step.name()) => Err(std::io::Error::other(
                format!("HOIST_FAIL_AT={v}: failing on purpose"),
            )),
            _ => Ok(()),
        }
    }
}
