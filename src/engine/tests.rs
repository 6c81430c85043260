//! The engine with an in-memory process manager: real git, real artifacts,
//! real directories, and a pm2 stand-in that runs nothing but answers like
//! pm2 (a release holding a `CRASH` file through `current` is `errored`).
//! These pin the step machine and the journal; tests/ does the same with
//! real pm2 and node.

mod rollout;

use super::*;
use crate::config::HostConfig;
use crate::pm2::{Pm2Error, Proc};
use crate::report::ProviderKind;
use futures::future::BoxFuture;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// A process manager that runs nothing.
#[derive(Debug, Default)]
struct FakePm {
    procs: Mutex<BTreeMap<String, Proc>>,
    /// "reload <app> <release>" / "delete <name>", in order.
    log: Mutex<Vec<String>>,
    /// Reloads in flight now, and the most ever at once.
    in_flight: Mutex<(usize, usize)>,
    /// How long a reload takes.
    delay: Duration,
}

impl FakePm {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
    fn most_at_once(&self) -> usize {
        self.in_flight.lock().unwrap().1
    }
}

impl ProcessManager for FakePm {
    fn start_or_reload<'a>(
        &'a self,
        app: &'a str,
        current: &'a Path,
        release: &'a str,
        manifest: &'a crate::config::Manifest,
    ) -> BoxFuture<'a, Result<(), Pm2Error>> {
        Box::pin(async move {
            {
                let mut f = self.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(self.delay).await;
            self.in_flight.lock().unwrap().0 -= 1;
            self.log
                .lock()
                .unwrap()
                .push(format!("reload {app} {release}"));
            let status = if current.join("CRASH").exists() {
                "errored"
            } else {
                "online"
            };
            let mut procs = self.procs.lock().unwrap();
            for name in manifest.process_names() {
                let id = procs.len() as i64;
                procs.insert(
                    name.clone(),
                    Proc {
                        name,
                        pm_id: id,
                        status: status.into(),
                        restarts: 0,
                        cwd: current.to_string_lossy().into_owned(),
                        hoist_app: Some(app.into()),
                    },
                );
            }
            Ok(())
        })
    }

    fn delete<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<(), Pm2Error>> {
        Box::pin(async move {
            let mut procs = self.procs.lock().unwrap();
            for n in names {
                if procs.remove(n).is_some() {
                    self.log.lock().unwrap().push(format!("delete {n}"));
                }
            }
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Proc>, Pm2Error>> {
        Box::pin(async move { Ok(self.procs.lock().unwrap().values().cloned().collect()) })
    }
}

struct World {
    tmp: tempfile::TempDir,
    pm: Arc<FakePm>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl World {
    fn new(delay: Duration) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join("apps")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(tmp.path().join("store")).unwrap();
        World {
            tmp,
            pm: Arc::new(FakePm {
                delay,
                ..FakePm::default()
            }),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A tar.zst of a tiny build holding VERSION and the given marker files.
    fn release(&self, name: &str, markers: &[&str]) -> (String, String) {
        let build = self.path(&format!("build-{name}"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("VERSION"), name).unwrap();
        for m in markers {
            std::fs::write(build.join(m), "").unwrap();
        }
        let out = self.path(&format!("store/{name}.tar.zst"));
        let sha = crate::producer::pack(&build, &out).unwrap();
        (format!("file://{}", out.display()), sha)
    }

    fn manifest(&self, app: &str, release: &str, extra: &str) {
        let (url, sha) = self.release(release, &[]);
        self.manifest_with(app, release, &url, &sha, extra);
    }

    fn manifest_with(&self, app: &str, release: &str, url: &str, sha: &str, extra: &str) {
        let text = format!(
            "release: {release}\nartifact:\n  url: {url}\n  sha256: {sha}\npm2:\n  - name: {app}\n    script: server.js\nhealth:\n  timeout: 2s\n  stable_for: 200ms\n{extra}"
        );
        std::fs::write(self.path(&format!("repo/apps/{app}.yaml")), text).unwrap();
    }

    fn commit(&self, msg: &str) -> String {
        let repo = self.path("repo");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&repo, &["rev-parse", "HEAD"])
    }

    async fn engine_with(&self, faults: Faults) -> Engine {
        let cfg = HostConfig::parse(
            &self.path("hoist.yaml"),
            &format!(
                "host: web-1\nroot: {}\nstate_dir: {}\nkeep_releases: 2\nrepo:\n  url: {}\nstatus:\n  provider: file\n  path: {}\n",
                self.path("srv").display(),
                self.path("state").display(),
                self.path("repo").display(),
                self.path("statuses.jsonl").display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        std::fs::create_dir_all(&cfg.root).unwrap();
        let mut settings = crate::setup::settings(&cfg).unwrap();
        settings.faults = faults;
        let provider = crate::report::build_provider(&crate::report::ProviderSettings {
            path: Some(self.path("statuses.jsonl")),
            ..crate::report::ProviderSettings::for_test(ProviderKind::File)
        })
        .unwrap();
        let parts = Parts {
            source: Source::new(&cfg),
            pm: self.pm.clone(),
            cache: crate::artifact::Cache::new(cfg.state_dir.join("cache")),
            fetch: FetchSettings::default(),
            limits: UnpackLimits {
                max_bytes: 1 << 30,
                max_entries: 10_000,
            },
            trusted: TrustedKeys::default(),
            reporter: Reporter::spawn(provider.clone(), None),
            forge: provider,
            metrics: Arc::new(Metrics::new()),
        };
        let e = Engine::new(settings, parts).await.unwrap();
        e.recover().await.unwrap();
        e
    }

    async fn engine(&self) -> Engine {
        self.engine_with(Faults::default()).await
    }

    fn current(&self, app: &str) -> Option<String> {
        std::fs::read_link(self.path(&format!("srv/{app}/current")))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn state(&self) -> crate::state::State {
        crate::state::State::load(&self.path("state")).unwrap()
    }

    async fn last_status(&self, e: &Engine) -> serde_json::Value {
        e.reporter().flush(Duration::from_secs(5)).await;
        let text = std::fs::read_to_string(self.path("statuses.jsonl")).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
}

fn outcome<'a>(r: &'a PassReport, app: &str) -> &'a Outcome {
    &r.outcomes.iter().find(|(a, _)| a == app).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_goes_through_the_ledger_and_leaves_no_journal() {
    let w = World::new(Duration::ZERO);
    w.manifest("web", "v1", "");
    let c1 = w.commit("v1");
    let e = w.engine().await;
    let r = e.pass().await.unwrap();
    assert!(r.converged, "{r:?}");
    assert_eq!(w.current("web").as_deref(), Some("releases/v1"));
    let st = w.state();
    let web = &st.apps["web"];
    assert_eq!(web.release(), Some("v1"));
    assert_eq!(web.commit(), Some(c1.as_str()));
    assert!(web.switch.is_none());
    assert_eq!(w.pm.log(), vec!["reload web v1"]);
    let h = crate::state::read_history(&w.path("state")).unwrap();
    assert_eq!(h.last().unwrap().event, "deploy");
    assert_eq!(w.last_status(&e).await["state"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_of_one_commit_deploy_at_once_and_only_the_failing_one_rolls_back() {
    let w = World::new(Duration::from_millis(300));
    for app in ["a", "b", "c"] {
        w.manifest(app, "v1", "");
    }
    w.commit("v1 everywhere");
    let e = w.engine().await;
    assert!(e.pass().await.unwrap().converged);
    assert!(
        w.pm.most_at_once() >= 2,
        "the three first deploys reloaded one after the other"
    );

    w.manifest("a", "v2", "");
    w.manifest("b", "v2", "");
    let (url, sha) = w.release("v2-crash", &["CRASH"]);
    w.manifest_with("c", "v2-crash", &url, &sha, "");
    let c2 = w.commit("v2, c crashes");
    let r = e.pass().await.unwrap();
    assert!(!r.converged);
    assert!(
        matches!(outcome(&r, "a"), Outcome::Deployed { .. }),
        "{r:?}"
    );
    assert!(
        matches!(outcome(&r, "b"), Outcome::Deployed { .. }),
        "{r:?}"
    );
    match outcome(&r, "c") {
        Outcome::Failed { rolled_back_to, .. } => {
            assert_eq!(rolled_back_to.as_deref(), Some("v1"))
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(w.current("a").as_deref(), Some("releases/v2"));
    assert_eq!(w.current("b").as_deref(), Some("releases/v2"));
    assert_eq!(w.current("c").as_deref(), Some("releases/v1"));
    let st = w.state();
    assert_eq!(st.apps["c"].release(), Some("v1"));
    assert_eq!(st.apps["c"].failed.as_ref().unwrap().commit, c2);
    assert!(st.apps.values().all(|a| a.switch.is_none()));
    let status = w.last_status(&e).await;
    assert_eq!(status["state"], "failure");
    let desc = status["description"].as_str().unwrap();
    assert!(desc.contains("c v2-crash failed"), "{desc}");
    assert!(desc.contains("a v2 live"), "{desc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_way_back_that_breaks_is_recorded_and_the_release_not_deployed_again() {
    let w = World::new(Duration::ZERO);
    w.manifest("web", "v1", "");
    w.commit("v1");
    w.engine().await.pass().await.unwrap();

    let (url, sha) = w.release("v2", &["CRASH"]);
    w.manifest_with("web", "v2", &url, &sha, "");
    let c2 = w.commit("v2 crashes");
    let broken = w
        .engine_with(Faults {
            fail_at: Some("auto-rollback-swap".into()),
            ..Faults::default()
        })
        .await;
    let r = broken.pass().await.unwrap();
    match outcome(&r, "web") {
        Outcome::Failed {
            error,
            rolled_back_to: None,
            ..
        } => assert!(error.contains("the way back failed too"), "{error}"),
        o => panic!("{o:?}"),
    }
    let st = w.state();
    let web = &st.apps["web"];
    assert_eq!(web.failed.as_ref().unwrap().commit, c2, "{web:?}");
    assert!(
        matches!(
            web.switch.as_ref().unwrap().why,
            SwitchWhy::AutoRollback { .. }
        ),
        "{web:?}"
    );
    // Still broken: the next pass neither deploys v2 again nor forgets it.
    let reloads = w.pm.log().len();
    let r = broken.pass().await.unwrap();
    assert!(
        r.outcomes.is_empty() || matches!(outcome(&r, "web"), Outcome::Held { .. }),
        "{r:?}"
    );
    assert_eq!(w.pm.log().len(), reloads, "{:?}", w.pm.log());
    drop(broken);

    // Once the disk works again, the way back is finished at start.
    let e = w.engine().await;
    assert_eq!(w.current("web").as_deref(), Some("releases/v1"));
    let web = w.state().apps["web"].clone();
    assert!(web.switch.is_none());
    assert_eq!(web.release(), Some("v1"));
    assert_eq!(web.failed.as_ref().unwrap().release, "v2");
    let r = e.pass().await.unwrap();
    assert!(!r.converged, "{r:?}");
    assert!(r.outcomes.is_empty(), "{r:?}");
    assert_eq!(w.pm.log().last().unwrap(), "reload web v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_release_relinked_is_exchanged_never_modified() {
    let w = World::new(Duration::ZERO);
    std::fs::create_dir_all(w.path("srv/web/shared")).unwrap();
    std::fs::write(w.path("srv/web/shared/.env"), "A=1").unwrap();
    w.manifest("web", "v1", "");
    w.commit("v1");
    let e = w.engine().await;
    e.pass().await.unwrap();
    let ino = |w: &World| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(w.path("srv/web/releases/v1"))
            .unwrap()
            .ino()
    };
    let before = ino(&w);

    // Same release, a new shared path; the hook looks at the running
    // directory before the swap.
    let seen = w.path("seen");
    w.manifest(
        "web",
        "v1",
        &format!(
            "shared: [.env]\nhooks:\n  before_activate: [[sh, -c, \"test -e {} && echo touched > {} || echo untouched > {}\"]]\n",
            w.path("srv/web/current/.env").display(),
            seen.display(),
            seen.display()
        ),
    );
    w.commit("v1 with .env");
    let r = e.pass().await.unwrap();
    assert!(r.converged, "{r:?}");
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), "untouched");
    assert_ne!(ino(&w), before, "the directory was exchanged");
    assert_eq!(
        std::fs::read_to_string(w.path("srv/web/current/.env")).unwrap(),
        "A=1"
    );
    let leftovers: Vec<_> = std::fs::read_dir(w.path("srv/web"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with('.').then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A relink that crashes the app is exchanged back.
    std::fs::write(w.path("srv/web/shared/CRASH"), "").unwrap();
    let relinked = ino(&w);
    w.manifest("web", "v1", "shared: [.env, CRASH]\n");
    w.commit("v1 with CRASH shared");
    let r = e.pass().await.unwrap();
    assert!(
        matches!(outcome(&r, "web"), Outcome::Failed { .. }),
        "{r:?}"
    );
    assert_eq!(ino(&w), relinked);
    assert!(!w.path("srv/web/current/CRASH").exists());
    assert!(w.path("srv/web/current/.env").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_undoes_a_deploy_and_finishes_every_other_change() {
    let w = World::new(Duration::ZERO);
    w.manifest("web", "v1", "");
    w.commit("v1");
    w.engine().await.pass().await.unwrap();
    w.manifest("web", "v2", "");
    w.commit("v2");
    w.engine().await.pass().await.unwrap();
    assert_eq!(w.current("web").as_deref(), Some("releases/v2"));
    let st = w.state();
    let v1 = st.apps["web"].previous.clone().unwrap();
    let v2 = st.apps["web"].live().cloned().unwrap();

    // Each case: the journal as a crash would leave it right after the
    // links moved, the link where it was moved, and what recovery must
    // leave: the release running and recorded.
    let cases = [
        (
            SwitchWhy::Deploy {
                commit: "c3".into(),
            },
            &v2,
            &v1,
            "v2",
        ),
        (
            SwitchWhy::AutoRollback {
                failed: crate::state::Failed {
                    commit: "c3".into(),
                    release: "v2".into(),
                    sha256: v2.sha256.clone(),
                    error: "sick".into(),
                    at: "t".into(),
                },
            },
            &v2,
            &v1,
            "v1",
        ),
        (
            SwitchWhy::Rollback {
                pin: Pin {
                    desired_release: Some("v2".into()),
                    desired_sha256: None,
                    at: "t".into(),
                },
            },
            &v2,
            &v1,
            "v1",
        ),
    ];
    for (why, from, to, ends_on) in cases {
        let kind = why.name();
        // Start each case from v2 running and recorded.
        let mut st = w.state();
        let app = st.app_mut("web");
        app.life = Life::Running {
            live: v2.clone(),
            commit: None,
            since: "t".into(),
            health: Health::Healthy,
            pin: None,
        };
        app.previous = Some(v1.clone());
        app.failed = None;
        app.switch = Some(Switch {
            why,
            from: Some(from.clone()),
            to: Some(to.clone()),
            exchange: None,
            started: "t".into(),
        });
        st.save(&w.path("state")).unwrap();
        AppDir::new(&w.path("srv"), "web")
            .activate(&to.release)
            .unwrap();

        let e = w.engine().await;
        let st = w.state();
        let web = &st.apps["web"];
        assert!(web.switch.is_none(), "{kind}: {web:?}");
        assert_eq!(web.release(), Some(ends_on), "{kind}");
        assert_eq!(
            w.current("web"),
            Some(format!("releases/{ends_on}")),
            "{kind}"
        );
        assert_eq!(
            w.pm.log().last().unwrap(),
            &format!("reload web {ends_on}"),
            "{kind}"
        );
        match kind {
            "automatic rollback" => assert_eq!(web.failed.as_ref().unwrap().release, "v2"),
            "local rollback" => assert!(web.pin().is_some()),
            _ => assert!(web.failed.is_none()),
        }
        drop(e);
    }
}

/// The links hoist made in a release directory (to `shared/` or to
/// `secrets/live/`), as paths inside it.
fn hoist_links(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(p);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).unwrap();
                let t = target.to_string_lossy();
                let t = t.trim_start_matches("../");
                if t.starts_with("shared/") || t.starts_with("secrets/live/") {
                    out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    out
}

/// What state.json records of each release's links is what its directory
/// holds: every `shared` path and secret, and nothing else.
fn links_agree(w: &World) {
    for (app, st) in &w.state().apps {
        for (release, known) in &st.releases {
            let dir = w.path(&format!("srv/{app}/releases/{release}"));
            let Some(m) = &known.manifest else { continue };
            if !dir.is_dir() {
                continue;
            }
            let want: std::collections::BTreeSet<String> = m
                .shared
                .iter()
                .chain(m.secrets.iter().map(|s| &s.to))
                .map(|p| p.rel().to_string())
                .collect();
            assert_eq!(
                hoist_links(&dir),
                want,
                "{app} {release}: the links on disk against state.json"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_automatic_rollback_the_state_describes_the_links_on_disk() {
    let w = World::new(Duration::ZERO);
    let (url, sha) = w.release("v1", &[]);
    w.manifest_with("web", "v1", &url, &sha, "shared: [.env]\n");
    w.commit("v1");
    let e = w.engine().await;
    assert!(e.pass().await.unwrap().converged);
    links_agree(&w);

    // The running release with one more shared file, which crashes it: a
    // re-linked copy is exchanged in, fails its gate, and is exchanged
    // back out.
    std::fs::write(w.path("srv/web/shared/CRASH"), "").unwrap();
    w.manifest_with("web", "v1", &url, &sha, "shared: [.env, CRASH]\n");
    w.commit("v1 with CRASH shared");
    let r = e.pass().await.unwrap();
    assert!(
        matches!(outcome(&r, "web"), Outcome::Failed { .. }),
        "{r:?}"
    );
    assert_eq!(w.current("web").as_deref(), Some("releases/v1"));
    links_agree(&w);

    // The file fixed, a later deploy of that layout links it for real.
    std::fs::remove_file(w.path("srv/web/shared/CRASH")).unwrap();
    e.retry("web").await.unwrap();
    let r = e.pass().await.unwrap();
    assert!(r.converged, "{r:?}");
    assert!(
        std::fs::symlink_metadata(w.path("srv/web/releases/v1/CRASH"))
            .is_ok_and(|m| m.file_type().is_symlink()),
        "releases/v1 has its CRASH link"
    );
    links_agree(&w);

    // An interrupted deploy undone at the next start, and a local rollback:
    // the same agreement.
    w.manifest_with("web", "v1", &url, &sha, "shared: [.env]\n");
    w.commit("v1 back to one shared file");
    let r = e.pass().await.unwrap();
    assert!(r.converged, "{r:?}");
    links_agree(&w);
    let (url2, sha2) = w.release("v2", &[]);
    w.manifest_with("web", "v2", &url2, &sha2, "shared: [.env, .env2]\n");
    w.commit("v2");
    assert!(e.pass().await.unwrap().converged);
    links_agree(&w);
    e.rollback("web", None).await.unwrap();
    links_agree(&w);
}
