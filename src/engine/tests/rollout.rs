//! The rollout gate inside the pass: three servers (three engines with
//! their own roots, state and pm2 stand-ins) on one config repository,
//! posting to and reading from the GitHub-shaped fake forge, whose clock
//! the test holds. A server's pass is `pass()`; a new engine for the same
//! server is a restart (its memory gone, its state and posted-status file
//! kept), which is how these tests step past a bake on the forge's clock
//! without waiting for it. tests/rollout.rs does the same with real pm2,
//! real node and three `hoist run`.

use super::*;
use crate::report::fake_forge::{FakeForge, Flavor, MAIN_IDENTITY};
use std::time::{SystemTime, UNIX_EPOCH};

const ROLLOUT: &str =
    "rollout:\n  waves:\n    - { labels: [canary], bake: 10m }\n    - { percent: 100 }\n";

/// 2027-01-15T08:00:00Z, far from this machine's clock on purpose: the
/// gate must not care.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

struct Fleet {
    w: World,
    forge: FakeForge,
    pms: BTreeMap<String, Arc<FakePm>>,
    /// `status.context` of every server (None: the default).
    context: Option<String>,
}

impl Fleet {
    /// web-1 (the canary), web-2, web-3 in `fleet/test.yaml`.
    async fn new() -> Fleet {
        let w = World::new(Duration::ZERO);
        std::fs::create_dir_all(w.path("repo/fleet")).unwrap();
        std::fs::write(
            w.path("repo/fleet/test.yaml"),
            "hosts:\n  web-1: { labels: [web, canary] }\n  web-2: { labels: [web] }\n  web-3: { labels: [web] }\n",
        )
        .unwrap();
        let forge = FakeForge::start(Flavor::Github).await;
        forge.set_time(t0());
        let pms = ["web-1", "web-2", "web-3"]
            .into_iter()
            .map(|h| (h.to_string(), Arc::new(FakePm::default())))
            .collect();
        Fleet {
            w,
            forge,
            pms,
            context: None,
        }
    }

    /// A server's engine (a new one: a restart), with `labels` in its host
    /// config.
    async fn engine_labelled(&self, host: &str, labels: &str) -> Engine {
        let w = &self.w;
        let cfg = HostConfig::parse(
            &w.path(&format!("{host}.yaml")),
            &format!(
                "host: {host}\nlabels: {labels}\nenvironment: test\nroot: {}\nstate_dir: {}\nrepo:\n  url: {}\n  poll_interval: 1s\nstatus:\n  provider: file\n  path: {}\n{}",
                w.path(&format!("srv-{host}")).display(),
                w.path(&format!("state-{host}")).display(),
                w.path("repo").display(),
                w.path("unused.jsonl").display(),
                self.context
                    .as_ref()
                    .map(|c| format!("  context: \"{c}\"\n"))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        std::fs::create_dir_all(&cfg.root).unwrap();
        let settings = crate::setup::settings(&cfg).unwrap();
        let provider = self.forge.provider();
        let parts = Parts {
            source: Source::new(&cfg),
            pm: self.pms[host].clone(),
            cache: crate::artifact::Cache::new(cfg.state_dir.join("cache")),
            fetch: FetchSettings::default(),
            limits: UnpackLimits {
                max_bytes: 1 << 30,
                max_entries: 10_000,
            },
            trusted: TrustedKeys::default(),
            reporter: Reporter::spawn(
                provider.clone(),
                Some(cfg.state_dir.join(crate::report::outbox::FILE_NAME)),
            ),
            forge: provider,
            metrics: Arc::new(Metrics::new()),
        };
        let e = Engine::new(settings, parts).await.unwrap();
        e.recover().await.unwrap();
        e
    }

    async fn engine(&self, host: &str) -> Engine {
        self.engine_labelled(host, "[web]").await
    }

    /// One pass, its statuses posted.
    async fn pass(&self, e: &Engine) -> PassReport {
        let r = e.pass().await.unwrap();
        e.reporter().flush(Duration::from_secs(5)).await;
        r
    }

    fn current(&self, host: &str) -> Option<String> {
        std::fs::read_link(self.w.path(&format!("srv-{host}/web/current")))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The statuses a server posted for a commit, oldest first: (state, description).
    fn posted(&self, commit: &str, host: &str) -> Vec<(String, String)> {
        let context = format!("hoist/test/{host}");
        self.forge
            .stored()
            .into_iter()
            .filter(|s| s.sha == commit && s.context == context)
            .map(|s| (s.state, s.description))
            .collect()
    }

    fn reads(&self) -> u64 {
        let c = self.forge.counters(MAIN_IDENTITY);
        c.reads + c.not_modified
    }
}

fn waiting(r: &PassReport) -> Option<&str> {
    r.outcomes.iter().find_map(|(_, o)| match o {
        Outcome::Waiting { description, .. } => Some(description.as_str()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_goes_first_and_the_others_wait_for_its_bake_on_the_forge_clock() {
    let f = Fleet::new().await;
    f.w.manifest("web", "v1", ROLLOUT);
    let c1 = f.w.commit("web v1");

    // web-2 looks first: the canary has not even started.
    let e2 = f.engine("web-2").await;
    let r = f.pass(&e2).await;
    assert_eq!(
        waiting(&r),
        Some("[hoist:wait web v1] web v1 waits for wave 1 (web-1)"),
        "{r:?}"
    );
    assert!(r.only_waiting() && !r.converged);
    assert!(f.pms["web-2"].log().is_empty(), "nothing reloaded on web-2");
    assert_eq!(f.current("web-2"), None);
    assert_eq!(
        f.posted(&c1, "web-2"),
        [(
            "pending".into(),
            "[hoist:wait web v1] web v1 waits for wave 1 (web-1)".into()
        )]
    );

    // The canary deploys at once.
    f.forge.advance(Duration::from_secs(60));
    let e1 = f.engine("web-1").await;
    let r = f.pass(&e1).await;
    assert!(r.converged, "{r:?}");
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v1"));

    // web-2 again: the same server does not even read before the end of
    // the bake it was told about, ten minutes on, though its poll
    // interval (1s) passes.
    let reads = f.reads();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = f.pass(&e2).await;
        assert!(waiting(&r).is_some(), "{r:?}");
        let wake = r.next_check.expect("a wake-up for the wait");
        assert!(wake > std::time::Instant::now() + Duration::from_secs(9 * 60));
    }
    assert_eq!(f.reads(), reads, "no read before the gate can open");

    // Restarted, it reads: the bake runs, 10m left... then 1s left.
    let e2 = f.engine("web-2").await;
    let r = f.pass(&e2).await;
    assert_eq!(
        waiting(&r),
        Some("[hoist:wait web v1] web v1 waits for wave 1 (web-1), 10m left"),
        "{r:?}"
    );
    f.forge.advance(Duration::from_secs(10 * 60 - 1));
    let r = f.pass(&f.engine("web-2").await).await;
    assert_eq!(
        waiting(&r),
        Some("[hoist:wait web v1] web v1 waits for wave 1 (web-1), 1s left")
    );
    assert_eq!(f.current("web-2"), None);

    // The bake is over on the forge's clock: wave 2 goes.
    f.forge.advance(Duration::from_secs(1));
    for host in ["web-2", "web-3"] {
        let r = f.pass(&f.engine(host).await).await;
        assert!(r.converged, "{host}: {r:?}");
        assert_eq!(f.current(host).as_deref(), Some("releases/v1"));
    }
    // Each server wrote at most a pending and its outcome for the commit.
    for host in ["web-1", "web-2", "web-3"] {
        let posted = f.posted(&c1, host);
        assert!(posted.len() <= 2, "{host}: {posted:?}");
        assert_eq!(posted.last().map(|p| p.0.as_str()), Some("success"));
    }
    assert_eq!(f.posted(&c1, "web-2")[0].0, "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_canary_halts_the_rest_and_a_revert_turns_all_green() {
    let f = Fleet::new().await;
    f.w.manifest("web", "v1", ROLLOUT);
    f.w.commit("web v1");
    for host in ["web-1", "web-2", "web-3"] {
        f.pass(&f.engine(host).await).await;
        f.forge.advance(Duration::from_secs(11 * 60));
    }
    assert!((1..=3).all(|i| f.current(&format!("web-{i}")).as_deref() == Some("releases/v1")));

    let (url, sha) = f.w.release("v2", &["CRASH"]);
    f.w.manifest_with("web", "v2", &url, &sha, ROLLOUT);
    let c2 = f.w.commit("web v2 crashes");
    let r = f.pass(&f.engine("web-1").await).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Failed { .. }),
        "{r:?}"
    );
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v1"));

    f.forge.advance(Duration::from_secs(3600));
    for host in ["web-2", "web-3"] {
        let e = f.engine(host).await;
        let r = f.pass(&e).await;
        match outcome(&r, "web") {
            Outcome::Halted { description, .. } => {
                assert_eq!(
                    description,
                    "[hoist:halt web v2] web v2 halted: web-1 failed"
                )
            }
            o => panic!("{host}: {o:?}"),
        }
        assert!(!r.converged && !r.only_waiting());
        // More passes over the commit say nothing new. A poll interval
        // on, the statuses are read again (its own report is new), and
        // one more on they are found unchanged: a 304.
        f.pass(&e).await;
        let before = f.forge.counters(MAIN_IDENTITY);
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            f.pass(&e).await;
        }
        let after = f.forge.counters(MAIN_IDENTITY);
        assert_eq!(after.not_modified, before.not_modified + 1, "{after:?}");
        assert_eq!(
            f.posted(&c2, host),
            [(
                "failure".into(),
                "[hoist:halt web v2] web v2 halted: web-1 failed".into()
            )]
        );
        assert_eq!(f.current(host).as_deref(), Some("releases/v1"));
        assert!(!f.pms[host].log().iter().any(|l| l.contains("v2")));
    }

    // The revert: every server runs v1 already, so all report success.
    f.w.manifest("web", "v1", ROLLOUT);
    let c3 = f.w.commit("Revert web v2");
    for host in ["web-1", "web-2", "web-3"] {
        let r = f.pass(&f.engine(host).await).await;
        assert!(r.converged, "{host}: {r:?}");
        assert_eq!(
            f.posted(&c3, host),
            [("success".into(), "web unchanged".into())]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoist_retry_on_the_failed_host_ends_the_halt() {
    let f = Fleet::new().await;
    let v2 = format!("shared: [CRASH]\n{ROLLOUT}");
    f.w.manifest("web", "v1", ROLLOUT);
    f.w.commit("web v1");
    for host in ["web-1", "web-2", "web-3"] {
        f.pass(&f.engine(host).await).await;
        f.forge.advance(Duration::from_secs(11 * 60));
    }
    // v2 fails on web-1 only: something of that server (a shared file).
    std::fs::write(f.w.path("srv-web-1/web/shared/CRASH"), "").unwrap();
    f.w.manifest("web", "v2", &v2);
    let c2 = f.w.commit("web v2");
    let e1 = f.engine("web-1").await;
    let r = f.pass(&e1).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Failed { .. }),
        "{r:?}"
    );
    f.forge.advance(Duration::from_secs(60));
    let r = f.pass(&f.engine("web-2").await).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Halted { .. }),
        "{r:?}"
    );

    // Still failed on record, web-1 itself stays halted on a new commit
    // that leaves web alone, like the others.
    let c3 = f.w.commit("nothing for web");
    let r = f.pass(&e1).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Halted { .. }),
        "{r:?}"
    );
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v1"));
    let e2 = f.engine("web-2").await;
    let r = f.pass(&e2).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Halted { .. }),
        "{r:?}"
    );

    // Fixed there, `hoist retry web` goes past the halt, and its success
    // ends it: wave 2 follows after the bake.
    std::fs::remove_file(f.w.path("srv-web-1/web/shared/CRASH")).unwrap();
    e1.retry("web").await.unwrap();
    f.forge.advance(Duration::from_secs(60));
    let r = f.pass(&e1).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Deployed { .. }),
        "{r:?}"
    );
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v2"));
    // web-2 reads again a poll interval after its last read.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = f.pass(&e2).await;
    assert_eq!(
        waiting(&r),
        Some("[hoist:wait web v2] web v2 waits for wave 1 (web-1), 10m left"),
        "{r:?}"
    );
    f.forge.advance(Duration::from_secs(10 * 60));
    let r = f.pass(&f.engine("web-2").await).await;
    assert!(r.converged, "{r:?}");
    assert_eq!(f.current("web-2").as_deref(), Some("releases/v2"));
    // The halt report, then (the halt ended) a pending and the success:
    // within the two writes a halt that ends may add.
    let posted: Vec<String> = f.posted(&c3, "web-2").into_iter().map(|p| p.0).collect();
    assert_eq!(posted, ["failure", "pending", "success"]);
    assert!(f.posted(&c2, "web-2").len() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_labels_are_the_servers_labels_and_config_changes_need_no_wave() {
    let f = Fleet::new().await;
    // Only canaries run it, and only the inventory says web-1 is one.
    f.w.manifest(
        "web",
        "v1",
        &format!("targets:\n  labels: [canary]\n{ROLLOUT}"),
    );
    f.w.commit("web v1 on canaries");
    let e1 = f.engine_labelled("web-1", "[web, eu]").await;
    assert!(f.pass(&e1).await.converged);
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v1"));
    let e2 = f.engine_labelled("web-2", "[canary]").await;
    let r = f.pass(&e2).await;
    assert!(
        r.outcomes.is_empty(),
        "web-2 is no canary in the inventory: {r:?}"
    );

    // Everywhere, then a change of how it runs only: no wave waits for it.
    f.w.manifest("web", "v1", ROLLOUT);
    f.w.commit("web v1 everywhere");
    f.pass(&e1).await;
    f.forge.advance(Duration::from_secs(11 * 60));
    for host in ["web-2", "web-3"] {
        assert!(f.pass(&f.engine(host).await).await.converged);
    }
    f.w.manifest("web", "v1", &format!("shared: [uploads/]\n{ROLLOUT}"));
    f.w.commit("web: an uploads folder");
    let reads = f.reads();
    let r = f.pass(&f.engine("web-3").await).await;
    assert!(
        matches!(outcome(&r, "web"), Outcome::Deployed { .. }),
        "the last wave redeploys at once: {r:?}"
    );
    assert_eq!(f.reads(), reads, "no gate, no read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_inventory_everyone_goes_at_once_without_reading() {
    let f = Fleet::new().await;
    std::fs::remove_file(f.w.path("repo/fleet/test.yaml")).unwrap();
    f.w.manifest("web", "v1", ROLLOUT);
    f.w.commit("web v1");
    for host in ["web-2", "web-3", "web-1"] {
        assert!(f.pass(&f.engine(host).await).await.converged, "{host}");
    }
    assert_eq!(f.reads(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_wakes_for_the_end_of_a_bake_measured_on_a_skewed_forge_clock() {
    let f = Fleet::new().await;
    // The forge runs ten minutes ahead of this machine.
    f.forge.skew(600);
    f.w.manifest(
        "web",
        "v1",
        "rollout:\n  waves:\n    - { labels: [canary], bake: 3s }\n    - { percent: 100 }\n",
    );
    f.w.commit("web v1");
    f.pass(&f.engine("web-1").await).await;
    let e2 = f.engine("web-2").await;
    let r = f.pass(&e2).await;
    assert!(waiting(&r).is_some(), "{r:?}");
    let wake = r.next_check.expect("a wake-up");
    let left = wake.saturating_duration_since(std::time::Instant::now());
    assert!(
        left > Duration::from_millis(500) && left <= Duration::from_secs(4),
        "wakes in {left:?}, the bake's end, not ten minutes off"
    );
    let reads = f.reads();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(waiting(&f.pass(&e2).await).is_some());
    assert_eq!(f.reads(), reads, "a poll interval on, the bake is not over");
    tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
    let r = f.pass(&e2).await;
    assert!(r.converged, "{r:?}");
    assert_eq!(f.current("web-2").as_deref(), Some("releases/v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_leaves_the_release_alone_keeps_the_bake_running() {
    let f = Fleet::new().await;
    f.w.manifest("web", "v1", ROLLOUT);
    f.w.commit("web v1");
    let e1 = f.engine("web-1").await;
    assert!(f.pass(&e1).await.converged);

    // Five minutes into the canary's bake, a commit for another app: the
    // canary reports success on it too, but the bake counts from its
    // first success on the release's run.
    f.forge.advance(Duration::from_secs(5 * 60));
    f.w.manifest("api", "a1", "");
    let c2 = f.w.commit("api a1");
    assert!(f.pass(&e1).await.converged);
    assert_eq!(
        f.posted(&c2, "web-1").last().map(|p| p.0.as_str()),
        Some("success")
    );
    let r = f.pass(&f.engine("web-2").await).await;
    assert_eq!(
        waiting(&r),
        Some("[hoist:wait web v1] web v1 waits for wave 1 (web-1), 5m left"),
        "{r:?}"
    );
    assert!(
        matches!(outcome(&r, "api"), Outcome::Deployed { .. }),
        "an app without a rollout goes at once: {r:?}"
    );
    f.forge.advance(Duration::from_secs(5 * 60));
    let r = f.pass(&f.engine("web-2").await).await;
    assert!(r.converged, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_was_down_joins_when_it_comes_back() {
    let f = Fleet::new().await;
    f.w.manifest("web", "v1", &format!("{ROLLOUT}  deadline: 30m\n"));
    let c1 = f.w.commit("web v1");
    f.pass(&f.engine("web-1").await).await;
    f.forge.advance(Duration::from_secs(11 * 60));
    f.pass(&f.engine("web-2").await).await;
    assert_eq!(f.current("web-2").as_deref(), Some("releases/v1"));

    // web-3 was down through its wave's deadline: counted failed, so the
    // rollout is halted, but only by a server that was late; back two
    // hours later, it deploys, and its success ends the halt.
    f.forge.advance(Duration::from_secs(2 * 3600));
    let r = f.pass(&f.engine("web-3").await).await;
    assert!(r.converged, "{r:?}");
    assert_eq!(f.current("web-3").as_deref(), Some("releases/v1"));
    let states: Vec<String> = f.posted(&c1, "web-3").into_iter().map(|p| p.0).collect();
    assert_eq!(states, ["pending", "success"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_without_host_is_an_error_for_a_commit_with_a_rollout() {
    let mut f = Fleet::new().await;
    f.context = Some("hoist/{environment}".into());
    f.w.manifest("web", "v1", "");
    let c0 = f.w.commit("web v1, no rollout");
    let e1 = f.engine("web-1").await;
    let r = f.pass(&e1).await;
    assert!(r.converged, "without a rollout the context is fine: {r:?}");

    f.w.manifest("web", "v2", ROLLOUT);
    let c1 = f.w.commit("web v2 in waves");
    for host in ["web-1", "web-2"] {
        let e = f.engine(host).await;
        let r = f.pass(&e).await;
        let why = r.invalid.clone().expect("the commit is refused");
        assert!(
            why.starts_with("status.context \"hoist/{environment}\" has no {host}"),
            "{why}"
        );
    }
    assert_eq!(f.current("web-1").as_deref(), Some("releases/v1"), "kept");
    // Posted under the context as it is, `error`, naming the key.
    let posted: Vec<_> = f
        .forge
        .stored()
        .into_iter()
        .filter(|s| s.sha == c1)
        .map(|s| (s.context, s.state, s.description))
        .collect();
    assert!(!posted.is_empty());
    for (context, state, description) in &posted {
        assert_eq!(context, "hoist/test");
        assert_eq!(state, "error");
        assert!(description.contains("status.context"), "{description}");
    }
    assert!(f.forge.stored().iter().any(|s| s.sha == c0));
}
