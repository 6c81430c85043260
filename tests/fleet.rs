//! `hoist fleet` as a promotion pipeline runs it: the real binary, a
//! config of three keys (`environment`, `repo`, `status`), a real config
//! repository, and a GitHub-shaped fake forge holding the statuses that
//! servers post (posted here through hoist's own providers, as `hoist run`
//! would: no servers are needed to see the fleet).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::World;
use common::forge::{FakeForge, Flavor};
use hoist::report::{ProviderSettings, State, Status, build_provider};

const TOKEN: &str = "forge-token-fleet-7d1e";
const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

struct Pipeline {
    w: World,
    forge: FakeForge,
    rt: tokio::runtime::Runtime,
}

impl Pipeline {
    fn new() -> Pipeline {
        let w = World::new();
        let forge = FakeForge::start(Flavor::Github, TOKEN, None);
        std::fs::write(w.path("forge-token"), TOKEN).unwrap();
        // What CI needs, and nothing else.
        let text = format!(
            "environment: test\nrepo:\n  url: file://{}\n  poll_interval: 1s\n{}allow_http: true\n",
            w.path("config.git").display(),
            forge.status_config(&w.path("forge-token"))
        );
        std::fs::write(w.path("ci.yaml"), text).unwrap();
        std::fs::create_dir_all(w.path("work/fleet")).unwrap();
        std::fs::write(
            w.path("work/fleet/test.yaml"),
            "hosts:\n  web-1: { labels: [canary] }\n  web-2: { labels: [] }\n",
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Pipeline { w, forge, rt }
    }

    fn release(&self, release: &str) -> String {
        let text = format!(
            "release: \"{release}\"\nartifact:\n  url: file:///srv/web.tar.zst\n  sha256: {SHA}\npm2:\n  - name: web\n    script: server.js\nrollout:\n  waves:\n    - {{ labels: [canary], bake: 1s }}\n    - {{ percent: 100 }}\n"
        );
        std::fs::write(self.w.path("work/apps/web.yaml"), text).unwrap();
        self.w.commit(&format!("web {release}"))
    }

    /// What a server posts.
    fn post(&self, sha: &str, host: &str, state: State, description: &str) {
        let settings = ProviderSettings {
            kind: hoist::report::ProviderKind::Github,
            api_url: Some(self.forge.server.base_url()),
            repository: Some("acme/deploy".into()),
            token: Some(TOKEN.into()),
            path: None,
            allow_http: true,
            ca_file: None,
            target_url: None,
        };
        let p = build_provider(&settings).unwrap();
        self.rt
            .block_on(p.post(&Status {
                sha: sha.into(),
                state,
                context: format!("hoist/test/{host}"),
                description: description.into(),
            }))
            .unwrap();
    }

    fn fleet(&self, args: &[&str]) -> Output {
        std::process::Command::new(common::hoist_bin())
            .arg("fleet")
            .args(args)
            .arg("--config")
            .arg(self.w.path("ci.yaml"))
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn fleet_wait_is_the_gate_of_a_promotion() {
    let p = Pipeline::new();

    // A bad release: the canary fails. --wait says so at once, exit 1.
    let c1 = p.release("1.0.0");
    p.post(&c1, "web-1", State::Pending, "applying");
    p.post(
        &c1,
        "web-1",
        State::Failure,
        "web 1.0.0 failed its health gate; rolled back",
    );
    p.post(
        &c1,
        "web-2",
        State::Failure,
        "web 1.0.0 halted: web-1 failed",
    );
    let started = Instant::now();
    let o = p.fleet(&["--wait", "--timeout", "30s"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(out.contains("HALTED"), "{out}");
    assert!(
        err.contains("web 1.0.0: wave 1 0/1 live, 1 failed · wave 2 blocked · HALTED"),
        "{err}"
    );

    // Without --wait it only shows: exit 0 whatever the state.
    let o = p.fleet(&[]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    // The fix: the canary succeeds, bakes a second on the forge's clock,
    // then wave 2 goes. --wait follows it to the end, exit 0.
    let c2 = p.release("1.0.1");
    p.post(&c2, "web-1", State::Success, "web 1.0.1 live in 1.0s");
    p.post(
        &c2,
        "web-2",
        State::Pending,
        "web 1.0.1 waits for wave 1 (web-1), 1s left",
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(2500));
            p.post(&c2, "web-2", State::Success, "web 1.0.1 live in 1.0s");
        });
        let o = p.fleet(&["--wait", "--timeout", "60s", "--json"]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).expect("--json is JSON");
        assert_eq!(doc["state"], "rolled_out");
        assert_eq!(doc["commit"], c2);
        assert_eq!(doc["environment"], "test");
        let web = &doc["apps"][0];
        assert_eq!(web["app"], "web");
        assert_eq!(web["release"], "1.0.1");
        assert_eq!(
            web["summary"],
            "wave 1 baked · wave 2 1/1 live · rolled out"
        );
        assert_eq!(web["waves"][1]["hosts"][0]["host"], "web-2");
        assert_eq!(web["waves"][1]["hosts"][0]["state"], "live");
        // Progress on stderr, one line per change, ending rolled out.
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("hoist fleet: "))
            .collect();
        assert!(lines.len() >= 2, "{err}");
        assert_eq!(
            lines.last().copied(),
            Some("hoist fleet: web 1.0.1: wave 1 baked · wave 2 1/1 live · rolled out")
        );
    });

    // The forge was asked conditionally: unchanged answers were 304s.
    let c = p.forge.counters(common::forge::MAIN_IDENTITY);
    assert!(c.not_modified > 0, "{c:?}");

    // REF: the halted commit, still halted (and superseded now).
    let o = p.fleet(&[&c1[..12]]);
    let (out, _) = text(&o);
    assert!(out.contains("HALTED"), "{out}");
    assert!(out.contains("superseded by 1.0.1"), "{out}");

    // Nobody answers: the wait gives up.
    p.release("1.0.2");
    let o = p.fleet(&["--wait", "--timeout", "2s"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("timed out after 2s"), "{err}");
}

#[test]
fn fleet_usage_and_config_errors_exit_2() {
    let p = Pipeline::new();
    let o = p.fleet(&["--timeout", "5s"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "--timeout needs --wait: {:?}",
        text(&o)
    );
    p.release("1.0.0");
    // One sentence each, naming what is wrong: the ref and the branch
    // looked in; the flag and its value.
    let o = p.fleet(&["nosuchref"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("hoist: nosuchref is neither a commit of branch main of file://"),
        "{err}"
    );
    assert!(!err.contains("revspec"), "{err}");
    for bad in ["-5s", "soon", "0s"] {
        let o = p.fleet(&["--wait", "--timeout", bad]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{bad}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "hoist: --timeout \"{bad}\" is not a length of time"
            )),
            "{err}"
        );
    }
    std::fs::write(
        p.w.path("ci.yaml"),
        "environment: test\nrepo:\n  url: /nowhere\n",
    )
    .unwrap();
    let o = p.fleet(&[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("status.provider"), "{err}");
}
