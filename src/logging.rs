//! Where log lines go and how they look, chosen once at start.
//!
//! Three audiences, one `tracing` subscriber on standard error:
//! - a person at a terminal: the usual `tracing` text, coloured only when
//!   stderr is a terminal (never escape codes in a file or a pipe);
//! - a log shipper: `--log-format json`, one JSON object a line;
//! - journald, when systemd started hoist with stderr connected to the
//!   journal (`JOURNAL_STREAM` names stderr's device and inode): no colours,
//!   no timestamps (the journal adds its own), and each line starts with a
//!   syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug),
//!   which journald's stream reader turns into the entry's PRIORITY, so
//!   `journalctl -p warning -u hoist` works. JSON wins over journald when
//!   both apply: whoever asked for JSON wants to parse it.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. `HOIST_LOG` overrides the level filter
/// (`tracing` env-filter syntax, e.g. `hoist=debug`); otherwise `default`
/// (`info` for the daemon and `once`, `warn` for quick commands).
pub fn init(format: Format, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == Format::Json {
        builder.json().init();
    } else if stderr_is_journal() {
        builder.with_ansi(false).event_format(Journald).init();
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init();
    }
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM`
/// is `<device>:<inode>` of that stream; a child that redirected stderr
/// elsewhere inherits the variable but no longer matches).
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<6>message key=value`: one journal entry per event.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(syslog_priority(&Level::ERROR), 3);
        assert_eq!(syslog_priority(&Level::WARN), 4);
        assert_eq!(syslog_priority(&Level::INFO), 6);
        assert_eq!(syslog_priority(&Level::DEBUG), 7);
    }
}
