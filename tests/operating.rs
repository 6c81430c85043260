//! Operating hoist, end to end with the real binary: `hoist run` under a
//! real systemd notify socket, `/metrics` after a deploy, webhooks from each
//! forge (signed and forged), `hoist trigger`, reloading the host config on
//! SIGHUP and when its file changes, log formats, and the producer side
//! (`hoist pack` reproducibility, `hoist publish` to a file:// store).

mod common;

use common::{World, hoist_bin};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Rewrites the world's host config for a daemon test: a long poll interval
/// (so only a trigger can explain a quick deploy), an HTTP listener on
/// `port` (None: none) and extra keys.
fn configure(w: &mut World, port: Option<u16>, extra: &str) {
    w.extra_config = extra.to_string();
    w.write_config();
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    let listen = match port {
        Some(p) => format!("listen: 127.0.0.1:{p}"),
        None => "listen: \"\"".to_string(),
    };
    let text = text
        .replace("poll_interval: 1s", "poll_interval: 1h")
        .replace("listen: \"\"", &listen);
    std::fs::write(w.config_path(), text).unwrap();
}

/// Starts `hoist run` with extra environment; the world stops it.
fn start_daemon_with(w: &mut World, env: &[(&str, &str)]) {
    let log = std::fs::File::create(w.path("daemon.log")).unwrap();
    let mut cmd = Command::new(hoist_bin());
    cmd.args(["run", "--config"])
        .arg(w.config_path())
        .env("PM2_HOME", w.path("pm2home"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    w.daemon = Some(cmd.spawn().unwrap());
}

fn daemon_pid(w: &World) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(w.daemon.as_ref().unwrap().id() as i32)
}

/// A POST on 127.0.0.1 with the given headers; the status code, or None
/// when nothing answers.
fn http_post(port: u16, path: &str, headers: &[(&str, String)], body: &[u8]) -> Option<u16> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

const PUSH_BODY: &[u8] =
    br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;

/// The headers each forge signs a push with, for `secret`.
fn signed(forge: &str, secret: &str) -> Vec<(&'static str, String)> {
    match forge {
        "github" => vec![
            ("X-GitHub-Event", "push".into()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", hmac_hex(secret, PUSH_BODY)),
            ),
        ],
        "gitea" => vec![
            ("X-Gitea-Event", "push".into()),
            ("X-Gitea-Signature", hmac_hex(secret, PUSH_BODY)),
        ],
        "gitlab" => vec![
            ("X-Gitlab-Event", "Push Hook".into()),
            ("X-Gitlab-Token", secret.to_string()),
        ],
        other => panic!("no forge {other}"),
    }
}

fn hook(port: u16, forge: &str, secret: &str) -> Option<u16> {
    http_post(port, "/hooks/git", &signed(forge, secret), PUSH_BODY)
}

fn metric_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(prefix))
}

/// Every notify message received until `until` says we have enough, or the
/// timeout.
fn notifications(
    sock: &UnixDatagram,
    timeout: Duration,
    mut until: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while t0.elapsed() < timeout && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn under_systemd_run_notifies_ready_status_watchdog_and_serves_metrics() {
    let mut w = World::new();
    let port = common::free_port();
    configure(&mut w, Some(port), "");
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    let c1 = w.commit("web v1");

    let sock_path = w.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    start_daemon_with(
        &mut w,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            // 0.4s: hoist pings every 0.2s.
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let has = |got: &[String], needle: &str| got.iter().any(|m| m.lines().any(|l| l == needle));
    let converged = format!("STATUS=converged on {}", &c1[..12]);
    let got = notifications(&sock, Duration::from_secs(60), |got| {
        has(got, "READY=1")
            && has(got, &converged)
            && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    assert!(
        has(&got, "READY=1"),
        "no READY=1 in {got:?}\n{}",
        w.daemon_log()
    );
    assert!(has(&got, &converged), "no {converged} in {got:?}");
    let first_ready = got.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_status = got
        .iter()
        .position(|m| m.contains("STATUS=converged"))
        .unwrap();
    assert!(first_ready < first_status, "READY=1 comes first: {got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "WATCHDOG=1 is sent every WATCHDOG_USEC/2: {got:?}"
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // What a Prometheus scrape sees after that one deploy.
    let (code, text) = common::http_get(port, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    for line in [
        "hoist_deploys_total{app=\"web\",result=\"success\"} 1",
        "hoist_current_release{app=\"web\",release=\"v1\"} 1",
        "hoist_deploy_duration_seconds_count{app=\"web\"} 1",
        "hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 1",
        "hoist_polls_total{result=\"ok\"} 1",
        "hoist_polls_total{result=\"error\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }
    let stamp: f64 = metric_line(&text, "hoist_last_successful_poll_timestamp_seconds ")
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("last successful poll time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - stamp < 120.0 && stamp <= now + 1.0,
        "{stamp} vs {now}"
    );
    for name in [
        "hoist_polls_total",
        "hoist_deploys_total",
        "hoist_deploy_duration_seconds",
        "hoist_current_release",
        "hoist_last_successful_poll_timestamp_seconds",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
    }
    assert_eq!(
        common::http_get(port, "/healthz").map(|r| r.0),
        Some(200),
        "healthz after a good poll"
    );

    // SIGTERM: STOPPING=1, then exit 0.
    assert_eq!(w.stop_daemon(), Some(0), "{}", w.daemon_log());
    let rest = notifications(&sock, Duration::from_secs(2), |got| has(got, "STOPPING=1"));
    assert!(has(&rest, "STOPPING=1"), "{rest:?}");
}

#[test]
fn webhooks_from_each_forge_trigger_a_poll_and_forged_ones_are_refused() {
    let mut w = World::new();
    let port = common::free_port();
    let secret = "hook-secret-1";
    std::fs::write(w.path("webhook-secret"), format!("{secret}\n")).unwrap();
    let extra = format!(
        "webhook_secret_file: {}\n",
        w.path("webhook-secret").display()
    );
    configure(&mut w, Some(port), &extra);
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    start_daemon_with(&mut w, &[]);
    // The first pass runs at start.
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );

    for (i, forge) in ["github", "gitea", "gitlab"].iter().enumerate() {
        let version = format!("v{}", i + 2);
        let before = format!("v{}", i + 1);
        let (url, sha) = w.make_release(&version, true, &[]);
        w.manifest("web", &version, &url, &sha, "");
        let commit = w.commit(&format!("web {version}"));

        // Forged: signed with another secret, and not signed at all.
        assert_eq!(hook(port, forge, "not-the-secret"), Some(401), "{forge}");
        assert_eq!(
            http_post(port, "/hooks/git", &[], PUSH_BODY),
            Some(401),
            "unsigned"
        );
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            w.app_says().as_deref(),
            Some(before.as_str()),
            "{forge}: a forged hook must not trigger a poll"
        );
        assert!(w.final_status(&commit).is_none(), "{forge}: not polled");

        // Signed: the poll happens now, not in an hour.
        let t0 = Instant::now();
        assert_eq!(hook(port, forge, secret), Some(202), "{forge}");
        assert!(
            w.wait_for(Duration::from_secs(45), || {
                w.app_says().as_deref() == Some(version.as_str())
            }),
            "{forge}: no deploy after a valid hook\n{}",
            w.daemon_log()
        );
        assert!(t0.elapsed() < Duration::from_secs(45));
        assert!(
            w.wait_for(Duration::from_secs(10), || {
                w.final_status(&commit).map(|s| s.0).as_deref() == Some("success")
            }),
            "{forge}: {:?}",
            w.statuses()
        );
    }
    let log = w.daemon_log();
    assert!(log.contains("missing or invalid signature"), "{log}");
    assert!(!log.contains(secret), "the secret leaked into the log");
}

/// `hoist_polls_total{result="ok"}` from a running daemon's /metrics.
fn polls(port: u16) -> Option<u64> {
    let (_, text) = common::http_get(port, "/metrics")?;
    metric_line(&text, "hoist_polls_total{result=\"ok\"} ")?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// 3,000 signed hooks in a second used to cost ~1,680 polls: a local
/// repository answers so fast that "coalesce what arrives during a poll"
/// merged little. A burst now costs one poll in flight plus one queued, and
/// webhook-triggered polls begin at least a second apart.
#[test]
fn a_burst_of_a_thousand_webhooks_costs_at_most_two_polls_a_second_apart() {
    let mut w = World::new();
    let port = common::free_port();
    let secret = "burst-secret";
    std::fs::write(w.path("webhook-secret"), secret).unwrap();
    let extra = format!(
        "webhook_secret_file: {}\n",
        w.path("webhook-secret").display()
    );
    configure(&mut w, Some(port), &extra);
    w.commit("no apps yet");
    start_daemon_with(&mut w, &[]);
    // The poll at start, and no other for an hour.
    assert!(
        w.wait_for(Duration::from_secs(30), || polls(port) == Some(1)),
        "{}",
        w.daemon_log()
    );

    let t0 = Instant::now();
    let accepted: usize = std::thread::scope(|s| {
        let posters: Vec<_> = (0..25)
            .map(|_| {
                s.spawn(|| {
                    (0..40)
                        .filter(|_| hook(port, "github", secret) == Some(202))
                        .count()
                })
            })
            .collect();
        posters.into_iter().map(|p| p.join().unwrap()).sum()
    });
    let burst = t0.elapsed();
    assert_eq!(accepted, 1000, "every signed hook is answered 202");
    assert!(
        burst < Duration::from_millis(900),
        "posting the burst took {burst:?}: this machine is too slow for the test's premise (one burst within a second)"
    );
    // The queued poll begins a second after the first; give it time to end.
    std::thread::sleep(Duration::from_secs(3));
    let after = polls(port).unwrap() - 1;
    assert!(
        (1..=2).contains(&after),
        "{after} polls followed a burst of 1000 hooks"
    );

    // Spacing: a lone hook polls; another, sent once that poll has ended
    // (so less than a second after it began), waits out the second.
    let before = polls(port).unwrap();
    assert_eq!(hook(port, "gitea", secret), Some(202));
    assert!(
        w.wait_for(Duration::from_secs(10), || polls(port) == Some(before + 1)),
        "{}",
        w.daemon_log()
    );
    let first_seen = Instant::now();
    assert_eq!(hook(port, "gitlab", secret), Some(202));
    while first_seen.elapsed() < Duration::from_millis(300) {
        assert_eq!(
            polls(port),
            Some(before + 1),
            "a second triggered poll less than a second after the first"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        w.wait_for(Duration::from_secs(10), || polls(port) == Some(before + 2)),
        "the queued hook was dropped\n{}",
        w.daemon_log()
    );
    assert_eq!(w.stop_daemon(), Some(0));
}

#[test]
fn hoist_trigger_polls_now_and_a_sighup_during_the_deploy_waits_for_it() {
    let mut w = World::new();
    configure(&mut w, None, "");
    // Without a daemon there is nobody to ask.
    let out = w.hoist(&["trigger"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `hoist run` running"), "{err}");

    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    start_daemon_with(&mut w, &[]);
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );

    let (url, sha) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url, &sha, "");
    let c2 = w.commit("web v2");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.app_says().as_deref(),
        Some("v1"),
        "nothing polls for an hour"
    );
    let out = w.hoist(&["trigger"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A SIGHUP in the middle of that deploy waits for the pass to end: the
    // deploy is not dropped, and the reload comes after it.
    let deploying = |log: &str| {
        log.lines()
            .any(|l| l.contains("deploying") && l.contains("\"v2\""))
    };
    assert!(
        w.wait_for(Duration::from_secs(30), || deploying(&w.daemon_log())),
        "{}",
        w.daemon_log()
    );
    nix::sys::signal::kill(daemon_pid(&w), nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        w.wait_for(Duration::from_secs(45), || w.app_says().as_deref()
            == Some("v2")),
        "{}",
        w.daemon_log()
    );
    assert!(w.wait_for(Duration::from_secs(10), || {
        w.final_status(&c2).map(|s| s.0).as_deref() == Some("success")
    }));
    assert!(
        w.wait_for(Duration::from_secs(10), || w
            .daemon_log()
            .contains("reloaded")),
        "{}",
        w.daemon_log()
    );
    let log = w.daemon_log();
    let live = log.find("v2 live in").expect("the deploy finished");
    let reload = log.find("SIGHUP: reloading").expect("the reload happened");
    assert!(live < reload, "the reload waited for the pass:\n{log}");
}

#[test]
fn sighup_and_a_config_file_change_reload_the_host_config() {
    let mut w = World::new();
    let port = common::free_port();
    std::fs::write(w_path_secret(&w, 1), "first\n").unwrap();
    let extra = with_secret(&w, 1);
    configure(&mut w, Some(port), &extra);
    // A commit without apps: the passes have nothing to do.
    w.commit("empty");
    start_daemon_with(&mut w, &[]);
    assert!(
        w.wait_for(Duration::from_secs(20), || hook(port, "github", "first")
            == Some(202)),
        "{}",
        w.daemon_log()
    );
    assert_eq!(hook(port, "github", "second"), Some(401));

    // SIGHUP re-reads the secret files: rotate the secret in place.
    std::fs::write(w_path_secret(&w, 1), "second\n").unwrap();
    nix::sys::signal::kill(daemon_pid(&w), nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        w.wait_for(Duration::from_secs(10), || hook(port, "gitea", "second")
            == Some(202)),
        "{}",
        w.daemon_log()
    );
    assert_eq!(hook(port, "gitea", "first"), Some(401));

    // Writing the config file is enough: it is watched.
    std::fs::write(w_path_secret(&w, 2), "third\n").unwrap();
    let extra = with_secret(&w, 2);
    configure(&mut w, Some(port), &extra);
    assert!(
        w.wait_for(Duration::from_secs(10), || hook(port, "gitlab", "third")
            == Some(202)),
        "{}",
        w.daemon_log()
    );
    assert_eq!(hook(port, "gitlab", "second"), Some(401));

    // A broken config is logged and the old one kept.
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(w.config_path(), format!("{good}no_such_key: 1\n")).unwrap();
    assert!(
        w.wait_for(Duration::from_secs(10), || w
            .daemon_log()
            .contains("keeping the old config")),
        "{}",
        w.daemon_log()
    );
    assert!(w.daemon_log().contains("no_such_key"), "{}", w.daemon_log());
    assert_eq!(hook(port, "github", "third"), Some(202));
    assert!(w.daemon.as_mut().unwrap().try_wait().unwrap().is_none());

    let log = w.daemon_log();
    assert!(log.matches("reloaded").count() >= 2, "{log}");
    assert_eq!(w.stop_daemon(), Some(0));
}

fn w_path_secret(w: &World, n: u32) -> std::path::PathBuf {
    w.path(&format!("webhook-secret-{n}"))
}

fn with_secret(w: &World, n: u32) -> String {
    format!("webhook_secret_file: {}\n", w_path_secret(w, n).display())
}

/// A small build tree; `reverse` creates the entries in the opposite order
/// and `mtime` stamps every file and directory.
fn build_tree(root: &Path, reverse: bool, mtime: u64) {
    let mut files = vec![
        ("server.js", "console.log('hi')\n"),
        ("lib/a.js", "module.exports = 1\n"),
        ("lib/b.js", "module.exports = 2\n"),
        ("public/index.html", "<h1>hi</h1>\n"),
        ("VERSION", "1.0.0\n"),
    ];
    if reverse {
        files.reverse();
    }
    for (p, text) in &files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let t = std::time::UNIX_EPOCH + Duration::from_secs(mtime);
    for (p, _) in &files {
        let f = std::fs::File::options()
            .write(true)
            .open(root.join(p))
            .unwrap();
        f.set_modified(t).unwrap();
    }
    if nix::unistd::geteuid().is_root() && reverse {
        for (p, _) in &files {
            std::os::unix::fs::chown(root.join(p), Some(4242), Some(4242)).unwrap();
        }
    }
}

#[test]
fn hoist_pack_prints_the_same_sha256_for_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a/app"), dir.path().join("b/app"));
    build_tree(&a, false, 1_000_000);
    build_tree(&b, true, 1_700_000_000);
    let pack = |src: &Path, out: &str| {
        let out = dir.path().join(out);
        let o = Command::new(hoist_bin())
            .arg("pack")
            .arg(src)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        let sha = stdout.split_whitespace().next().unwrap().to_string();
        assert_eq!(stdout.trim(), format!("{sha}  {}", out.display()));
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sha, "printed = file");
        sha
    };
    let sha_a = pack(&a, "a.tar.zst");
    let sha_b = pack(&b, "b.tar.zst");
    assert_eq!(sha_a, sha_b, "same tree, other mtimes/owners/order");

    std::fs::write(b.join("VERSION"), "1.0.1\n").unwrap();
    assert_ne!(pack(&b, "c.tar.zst"), sha_a, "other content, other sha256");
}

#[test]
fn publish_to_a_file_store_then_deploy_it() {
    let w = World::new();
    let build = w.path("builds/web");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("server.js"), common::APP_JS).unwrap();
    std::fs::write(build.join("VERSION"), "v1\n").unwrap();

    // A manifest people wrote, with comments and keys publish must keep.
    let manifest = w.path("work/apps/web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "# The public web app.\nrelease: \"v0\"   # set by CI\nartifact:\n  url: file:///nowhere/web-v0.tar.zst\n  sha256: {zeros}\nshared: [.env]\npm2:\n  - name: web\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 15s\n  stable_for: 1s\n",
            zeros = "0".repeat(64),
            port = w.app_port
        ),
    )
    .unwrap();

    let store = w.path("published");
    let to = format!("file://{}/", store.display());
    let publish = |release: &str| {
        w.hoist(&[
            "publish",
            build.to_str().unwrap(),
            "--to",
            &to,
            "--manifest",
            manifest.to_str().unwrap(),
            "--release",
            release,
        ])
    };
    let out = publish("v1");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `<prefix><dirname>-<release>.tar.zst`
    let expected_url = format!("file://{}/web-v1.tar.zst", store.display());
    let first = stdout.lines().next().unwrap();
    let (sha, url) = first.split_once("  ").unwrap();
    assert_eq!(url, expected_url);
    let bytes = std::fs::read(store.join("web-v1.tar.zst")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
    let leftovers: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.starts_with("# The public web app.\n"), "{text}");
    assert!(text.contains("release: \"v1\"   # set by CI"), "{text}");
    assert!(text.contains(&format!("url: {expected_url}")), "{text}");
    assert!(text.contains(&format!("sha256: {sha}")), "{text}");
    assert!(text.contains("stable_for: 1s"), "{text}");

    let c = w.commit("web v1, published by CI");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c).unwrap().0, "success");

    // Publishing the same bytes again is harmless; other bytes under a
    // published name are refused and the manifest is left alone.
    let again = publish("v1");
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    std::fs::write(build.join("VERSION"), "v1-changed\n").unwrap();
    let clash = publish("v1");
    assert_eq!(clash.status.code(), Some(1));
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(err.contains("already exists with other content"), "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);

    // --manifest without --release is a usage error.
    let usage = w.hoist(&[
        "publish",
        build.to_str().unwrap(),
        "--to",
        &to,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(usage.status.code(), Some(2));
}

/// `hoist once` on a commit without apps, stderr captured in a file, with
/// extra arguments and environment.
fn once_stderr(w: &World, args: &[&str], journal: bool) -> String {
    let err_path = w.path("stderr.log");
    let err = std::fs::File::create(&err_path).unwrap();
    let mut cmd = Command::new(hoist_bin());
    cmd.args(args)
        .arg("once")
        .arg("--config")
        .arg(w.config_path())
        .env("PM2_HOME", w.path("pm2home"))
        .env_remove("HOIST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null());
    if journal {
        use std::os::unix::fs::MetadataExt;
        let m = err.metadata().unwrap();
        cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    }
    let status = cmd.stderr(Stdio::from(err)).status().unwrap();
    assert_eq!(status.code(), Some(0));
    std::fs::read_to_string(&err_path).unwrap()
}

#[test]
fn logs_are_json_with_log_format_json_and_journald_lines_under_systemd() {
    let w = World::new();
    let c = w.commit("nothing to deploy yet");

    let json = once_stderr(&w, &["--log-format", "json"], false);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let new_commit = lines
        .iter()
        .find(|v| v["fields"]["message"] == "new commit on main")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(new_commit["level"], "INFO");
    assert_eq!(new_commit["fields"]["commit"], c.as_str());
    assert!(new_commit["timestamp"].is_string());

    // Plain text into a file: no colour codes.
    w.commit("once more");
    let text = once_stderr(&w, &[], false);
    assert!(text.contains("new commit on main"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a file: {text:?}");

    // stderr is the journal: a priority prefix, no timestamp, no colours.
    w.commit("and again");
    let journal = once_stderr(&w, &[], true);
    let line = journal
        .lines()
        .find(|l| l.contains("new commit on main"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(line.starts_with("<6>new commit on main"), "{line:?}");
    assert!(!journal.contains('\u{1b}'), "{journal:?}");
}

#[test]
fn publish_to_s3_from_ci_variables_then_deploy_it_and_large_files_go_in_parts() {
    use common::s3::{ACCESS_KEY, S3, SECRET_KEY};
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"), None);
    std::fs::create_dir_all(tmp.path().join("s3/releases")).unwrap();
    let mut w = World::new();
    std::fs::write(w.path("s3-key-id"), ACCESS_KEY).unwrap();
    std::fs::write(w.path("s3-secret"), format!("{SECRET_KEY}\n")).unwrap();
    w.extra_config = format!(
        "storage:\n  s3:\n    endpoint: {}\n    access_key_id_file: {}\n    secret_access_key_file: {}\nallow_http: true\n",
        s3.endpoint(),
        w.path("s3-key-id").display(),
        w.path("s3-secret").display()
    );
    w.write_config();

    let build = w.path("builds/web");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("server.js"), common::APP_JS).unwrap();
    std::fs::write(build.join("VERSION"), "v1\n").unwrap();
    w.manifest("web", "v0", "file:///nowhere.tar.zst", &"0".repeat(64), "");
    let manifest = w.path("work/apps/web.yaml");

    // A CI runner: no host config, the store and keys in AWS_* variables.
    let ci_env = [
        ("AWS_ENDPOINT_URL", s3.endpoint()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let publish = |dir: &Path, to: &str, extra: &[&str]| {
        let mut cmd = Command::new(hoist_bin());
        cmd.arg("publish")
            .arg(dir)
            .args(["--to", to])
            .args(extra)
            .args(["--config", "/nonexistent/hoist.yaml"])
            .env_remove("AWS_SESSION_TOKEN");
        for (k, v) in &ci_env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = publish(
        &build,
        "s3://releases/web/",
        &["--manifest", manifest.to_str().unwrap(), "--release", "v1"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (sha, url) = stdout.lines().next().unwrap().split_once("  ").unwrap();
    assert_eq!(url, "s3://releases/web/web-v1.tar.zst");
    let stored = std::fs::read(tmp.path().join("s3/releases/web/web-v1.tar.zst")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&stored)), sha);

    // The server reads the store with the keys from its host config.
    let c = w.commit("web v1 from s3");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c).unwrap().0, "success");

    // Over 16 MiB (incompressible): a multipart upload, same bytes.
    let big = w.path("builds/big");
    std::fs::create_dir_all(&big).unwrap();
    let mut noise = vec![0u8; 17 * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(big.join("blob.bin"), &noise).unwrap();
    let out = publish(&big, "s3://releases/big/big-1.tar.zst", &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let sha = stdout.split_whitespace().next().unwrap();
    let stored = std::fs::read(tmp.path().join("s3/releases/big/big-1.tar.zst")).unwrap();
    assert!(stored.len() > 16 * 1024 * 1024);
    assert_eq!(hex::encode(Sha256::digest(&stored)), sha);
}
