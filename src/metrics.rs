//! The numbers `/metrics` exposes (SPEC §6): polls, deploys by app and
//! result, deploy durations, the current release per app, and when the last
//! poll succeeded.
//!
//! One [`Metrics`] is created at start and shared as `Arc<Metrics>`: the
//! daemon records into it, `http.rs` encodes it. It owns its own
//! prometheus-client registry, so names and help texts are defined in one
//! place and tests can encode a fresh instance without global state. Every
//! method takes `&self` (the metric types are atomics or locked inside).
//!
//! `hoist_current_release` is an "info"-style gauge: exactly one label set
//! per app has the value 1. When an app moves to another release the old
//! label set is removed rather than left at 0, so a query for
//! `hoist_current_release == 1` and a plain `count by (app)` both stay right.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Deploy duration buckets, in seconds: from a no-op reload (half a second)
/// to a slow download plus a long health gate (ten minutes).
const DURATION_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeployLabels {
    app: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    app: String,
    release: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// hoist's metrics and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    polls: Family<PollLabels, Counter>,
    deploys: Family<DeployLabels, Counter>,
    deploy_duration: Family<AppLabels, Histogram, fn() -> Histogram>,
    current_release: Family<ReleaseLabels, Gauge>,
    /// The release each app's gauge is set for, so the old one can go.
    current: Mutex<HashMap<String, String>>,
    last_successful_poll: Gauge<f64, AtomicU64>,
    status_outbox: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();

        let polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "hoist_polls",
            "Polls of the config repository, by result (ok or error)",
            polls.clone(),
        );
        // Both series exist from the start, so rate() works before the
        // first error.
        for result in ["ok", "error"] {
            let _ = polls.get_or_create(&PollLabels {
                result: result.into(),
            });
        }

        let deploys = Family::<DeployLabels, Counter>::default();
        registry.register(
            "hoist_deploys",
            "Deploys of an app, by result (success, failure or error)",
            deploys.clone(),
        );

        let deploy_duration: Family<AppLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "hoist_deploy_duration_seconds",
            "Time from the start of an app's deploy to its outcome, in seconds",
            deploy_duration.clone(),
        );

        let current_release = Family::<ReleaseLabels, Gauge>::default();
        registry.register(
            "hoist_current_release",
            "The release an app currently runs (1 for the current release)",
            current_release.clone(),
        );

        let last_successful_poll = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "hoist_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll of the config repository",
            last_successful_poll.clone(),
        );

        let status_outbox = Gauge::default();
        registry.register(
            "hoist_status_outbox",
            "Commit statuses waiting in state_dir to be posted to the forge",
            status_outbox.clone(),
        );

        Metrics {
            status_outbox,
            registry,
            polls,
            deploys,
            deploy_duration,
            current_release,
            current: Mutex::new(HashMap::new()),
            last_successful_poll,
        }
    }

    /// Count a finished poll; a successful one also sets the last successful
    /// poll time to now.
    pub fn poll(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.polls
            .get_or_create(&PollLabels {
                result: result.into(),
            })
            .inc();
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.last_successful_poll.set(now);
        }
    }

    /// Count a finished deploy of `app` (`result`: `success`, `failure` or
    /// `error`) and record how long it took.
    pub fn deploy(&self, app: &str, result: &str, seconds: f64) {
        self.deploys
            .get_or_create(&DeployLabels {
                app: app.into(),
                result: result.into(),
            })
            .inc();
        if seconds.is_finite() && seconds >= 0.0 {
            self.deploy_duration
                .get_or_create(&AppLabels { app: app.into() })
                .observe(seconds);
        }
    }

    /// Mark `release` as `app`'s current release (removing the previous
    /// one's series); `None` removes the app's series altogether.
    pub fn set_current_release(&self, app: &str, release: Option<&str>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.get(app)
            && Some(old.as_str()) != release
        {
            self.current_release.remove(&ReleaseLabels {
                app: app.into(),
                release: old.clone(),
            });
        }
        match release {
            Some(release) => {
                self.current_release
                    .get_or_create(&ReleaseLabels {
                        app: app.into(),
                        release: release.into(),
                    })
                    .set(1);
                current.insert(app.into(), release.into());
            }
            None => {
                current.remove(app);
            }
        }
    }

    /// How many commit statuses wait in the outbox.
    pub fn status_outbox(&self, waiting: usize) {
        self.status_outbox
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// Everything, in the Prometheus text format (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            // Only a formatter error can get here; serve what was written.
            tracing::warn!("cannot encode metrics: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_metric_has_help_and_type() {
        // A family with no series yet is left out, as Prometheus clients do.
        let m = Metrics::new();
        m.poll(true);
        m.deploy("web", "success", 1.0);
        m.set_current_release("web", Some("2026.11.27-3"));
        let text = m.encode();
        for (name, kind) in [
            ("hoist_polls_total", "counter"),
            ("hoist_deploys_total", "counter"),
            ("hoist_deploy_duration_seconds", "histogram"),
            ("hoist_current_release", "gauge"),
            ("hoist_last_successful_poll_timestamp_seconds", "gauge"),
            ("hoist_status_outbox", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name} in\n{text}"
            );
            assert!(
                text.contains(&format!("# TYPE {name} {kind}")),
                "no TYPE for {name} in\n{text}"
            );
        }
        assert_eq!(
            line(&text, "hoist_polls_total{result=\"error\"}"),
            Some("hoist_polls_total{result=\"error\"} 0"),
            "both poll results exist from the start"
        );
    }

    #[test]
    fn polls_are_counted_and_stamp_the_last_success() {
        let m = Metrics::new();
        m.poll(true);
        m.poll(true);
        m.poll(false);
        let text = m.encode();
        assert_eq!(
            line(&text, "hoist_polls_total{result=\"ok\"}"),
            Some("hoist_polls_total{result=\"ok\"} 2")
        );
        assert_eq!(
            line(&text, "hoist_polls_total{result=\"error\"}"),
            Some("hoist_polls_total{result=\"error\"} 1")
        );
        let stamp: f64 = line(&text, "hoist_last_successful_poll_timestamp_seconds ")
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("timestamp line");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!((now - stamp).abs() < 60.0, "{stamp} vs {now}");
    }

    #[test]
    fn deploys_are_counted_by_app_and_result_with_durations() {
        let m = Metrics::new();
        m.deploy("web", "success", 4.2);
        m.deploy("web", "success", 0.3);
        m.deploy("web", "failure", 45.0);
        m.deploy("api", "error", 0.1);
        let text = m.encode();
        assert_eq!(
            line(&text, "hoist_deploys_total{app=\"web\",result=\"success\"}"),
            Some("hoist_deploys_total{app=\"web\",result=\"success\"} 2")
        );
        assert!(text.contains("hoist_deploys_total{app=\"web\",result=\"failure\"} 1"));
        assert!(text.contains("hoist_deploys_total{app=\"api\",result=\"error\"} 1"));
        assert!(text.contains("hoist_deploy_duration_seconds_count{app=\"web\"} 3"));
        assert!(text.contains("hoist_deploy_duration_seconds_sum{app=\"web\"} 49.5"));
        assert!(
            text.contains("hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(text.contains("hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"5\"} 2"));
        assert!(text.contains("hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"600\"} 3"));
        assert!(text.contains("hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 3"));
    }

    #[test]
    fn only_the_current_release_is_exported() {
        let m = Metrics::new();
        m.set_current_release("web", Some("2026.11.27-2"));
        m.set_current_release("api", Some("1.0.0"));
        m.set_current_release("web", Some("2026.11.27-3"));
        let text = m.encode();
        assert!(
            text.contains("hoist_current_release{app=\"web\",release=\"2026.11.27-3\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("2026.11.27-2"),
            "old release left behind:\n{text}"
        );
        assert!(text.contains("hoist_current_release{app=\"api\",release=\"1.0.0\"} 1"));

        m.set_current_release("web", Some("2026.11.27-3"));
        m.set_current_release("api", None);
        let text = m.encode();
        assert!(text.contains("hoist_current_release{app=\"web\",release=\"2026.11.27-3\"} 1"));
        assert!(!text.contains("app=\"api\""), "{text}");
    }
}
