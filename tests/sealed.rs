//! Sealed app secrets on a server (SPEC §7), end to end: real git, the real
//! `hoist` binary sealing and opening, real pm2 and a real Node app that
//! reads its `.env`. The pair (release, secrets) moves together, a
//! secret-only commit redeploys, a re-seal of the same plaintext does not,
//! a file this server cannot open changes nothing, and the plaintext is
//! written nowhere but `<root>/<app>/secrets/`.

mod common;

use common::World;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A world whose server has an identity listed in fleet/test.yaml.
fn world() -> World {
    let mut w = World::new();
    let identity = w.path("identity");
    let out = w.hoist(&["keygen", "-o", identity.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    std::fs::create_dir_all(w.path("work/fleet")).unwrap();
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        format!("hosts:\n  web-1: {{ labels: [web], key: \"{public}\" }}\n"),
    )
    .unwrap();
    w.extra_config = format!("identity_file: {}\n", identity.display());
    w.write_config();
    w
}

/// Seals `plaintext` (given on stdin, so it is in no file of the world) for
/// the app `web` of environment `test`.
fn seal(w: &World, plaintext: &str) {
    std::fs::create_dir_all(w.path("work/secrets/test")).unwrap();
    let mut child = Command::new(common::hoist_bin())
        .args(["secrets", "seal", "--env", "test", "--app", "web", "--repo"])
        .arg(w.path("work"))
        .arg("-")
        .arg(w.path("work/secrets/test/web.env.age"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plaintext.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The manifest of `web` with its sealed `.env` (no `shared` paths).
fn manifest(w: &World, release: &str, (url, sha): &(String, String)) {
    let port = w.app_port;
    let text = format!(
        "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\nsecrets:\n  - from: secrets/{{environment}}/web.env.age\n    to: .env\npm2:\n  - name: web\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 6s\n  stable_for: 1s\n"
    );
    std::fs::write(w.path("work/apps/web.yaml"), text).unwrap();
}

fn env_of_app(w: &World) -> Option<String> {
    common::http_get(w.app_port, "/env").map(|(_, b)| b.trim().to_string())
}

/// Where `secrets/live` points, and the plaintext behind it.
fn live_secret(w: &World) -> (String, String) {
    let link = std::fs::read_link(w.path("srv/web/secrets/live")).unwrap();
    let text = std::fs::read_to_string(w.path("srv/web/secrets/live/.env")).unwrap();
    (link.to_string_lossy().into_owned(), text)
}

#[test]
fn the_app_reads_its_secret_and_only_a_change_of_plaintext_redeploys() {
    let w = world();
    let v1 = w.make_release("v1", true, &[]);
    manifest(&w, "v1", &v1);
    seal(&w, "DB_PASSWORD=first");
    w.commit("web v1 with its secret");
    w.once(0);
    assert_eq!(env_of_app(&w).as_deref(), Some("DB_PASSWORD=first"));
    // The plaintext is 0600 in a generation; the release links to it.
    let (generation, text) = live_secret(&w);
    assert_eq!(text, "DB_PASSWORD=first");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(w.path(&format!("srv/web/secrets/{generation}/.env")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read_link(w.path("srv/web/releases/v1/.env")).unwrap(),
        PathBuf::from("../../secrets/live/.env")
    );
    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["secrets"], generation.as_str());

    // A re-seal of the same plaintext (a new ciphertext) changes nothing.
    seal(&w, "DB_PASSWORD=first");
    let c2 = w.commit("re-sealed, same plaintext");
    let events = w.history().len();
    w.once(0);
    assert_eq!(w.history().len(), events, "a re-seal redeployed");
    assert_eq!(live_secret(&w).0, generation);
    assert_eq!(w.final_status(&c2).unwrap().0, "success");

    // A secret-only commit redeploys the running release, no download.
    std::fs::remove_file(v1.0.trim_start_matches("file://")).unwrap();
    seal(&w, "DB_PASSWORD=second");
    let c3 = w.commit("rotate the password");
    w.once(0);
    assert_eq!(env_of_app(&w).as_deref(), Some("DB_PASSWORD=second"));
    let (g2, _) = live_secret(&w);
    assert_ne!(g2, generation);
    assert_eq!(w.final_status(&c3).unwrap().0, "success");
    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["release"], "v1");
    assert_eq!(st["apps"]["web"]["secrets"], g2.as_str());
}

#[test]
fn an_unhealthy_release_with_a_new_secret_rolls_back_both() {
    let w = world();
    let v1 = w.make_release("v1", true, &[]);
    manifest(&w, "v1", &v1);
    seal(&w, "TOKEN=old");
    w.commit("web v1");
    w.once(0);
    let (g1, _) = live_secret(&w);

    let sick = w.make_release("v2-sick", true, &["UNHEALTHY"]);
    manifest(&w, "v2-sick", &sick);
    seal(&w, "TOKEN=new");
    let c2 = w.commit("web v2 (unhealthy) with a new token");
    w.once(1);
    w.assert_links_agree("after the automatic rollback");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(env_of_app(&w).as_deref(), Some("TOKEN=old"));
    assert_eq!(live_secret(&w), (g1.clone(), "TOKEN=old".to_string()));
    assert_eq!(w.final_status(&c2).unwrap().0, "failure");
    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["release"], "v1");
    assert_eq!(st["apps"]["web"]["secrets"], g1.as_str());
}

#[test]
fn a_file_this_server_cannot_open_is_an_error_and_changes_nothing() {
    let w = world();
    let v1 = w.make_release("v1", true, &[]);
    manifest(&w, "v1", &v1);
    seal(&w, "KEY=mine");
    w.commit("web v1");
    w.once(0);
    let before = live_secret(&w);

    // Sealed to another key only, with the reference tool.
    let other = w.path("other-identity");
    let out = w.hoist(&["keygen", "-o", other.to_str().unwrap()]);
    let other_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut age = Command::new("age")
        .args(["-r", &other_key, "-o"])
        .arg(w.path("work/secrets/test/web.env.age"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    age.stdin
        .take()
        .unwrap()
        .write_all(b"KEY=not-for-this-server")
        .unwrap();
    assert!(age.wait().unwrap().success());
    let v2 = w.make_release("v2", true, &[]);
    manifest(&w, "v2", &v2);
    let c2 = w.commit("web v2, sealed to someone else");
    let out = w.once(1);
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.contains("secrets/test/web.env.age"), "{desc}");
    assert!(desc.contains("rekey"), "{desc}");
    assert!(!out.contains("not-for-this-server"));
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(live_secret(&w), before);
    assert_eq!(w.releases_on_disk("web"), vec!["v1"], "nothing was fetched");
}

#[test]
fn a_crash_at_every_step_of_a_secret_changing_deploy_leaves_a_whole_pair() {
    for step in [
        "download",
        "link",
        "unpack",
        "hooks",
        "swap",
        "reload",
        "health",
        "state-write",
    ] {
        let w = world();
        let v1 = w.make_release("v1", true, &[]);
        manifest(&w, "v1", &v1);
        seal(&w, "PAIR=one");
        w.commit("web v1");
        w.once(0);
        let (g1, _) = live_secret(&w);

        let v2 = w.make_release("v2", true, &[]);
        manifest(&w, "v2", &v2);
        seal(&w, "PAIR=two");
        w.commit("web v2 with PAIR=two");
        let out = w.hoist_env(&["once"], &[("HOIST_FAULT_AT", step)]);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{step}: {out:?}");

        // On disk: v1 with its secret, or v2 with its own; state.json
        // names that pair, or records the switch to it.
        let current = w.current_target("web").unwrap();
        let (live, text) = live_secret(&w);
        let pair = match current.as_str() {
            "releases/v1" => {
                assert_eq!(
                    (live.as_str(), text.as_str()),
                    (g1.as_str(), "PAIR=one"),
                    "{step}"
                );
                "v1"
            }
            "releases/v2" => {
                assert_eq!(text, "PAIR=two", "{step}");
                "v2"
            }
            other => panic!("{step}: current -> {other}"),
        };
        let st = w.status_json();
        if st["apps"]["web"]["release"] != pair {
            assert_eq!(st["apps"]["web"]["switching"]["to"], pair, "{step}: {st}");
        }

        // Restarted: the whole new pair, state, link and app agreeing.
        w.once(0);
        w.assert_links_agree(step);
        assert_eq!(w.app_says().as_deref(), Some("v2"), "{step}");
        assert_eq!(env_of_app(&w).as_deref(), Some("PAIR=two"), "{step}");
        let st = w.status_json();
        assert_eq!(st["apps"]["web"]["release"], "v2", "{step}");
        assert_eq!(
            st["apps"]["web"]["secrets"],
            live_secret(&w).0.as_str(),
            "{step}"
        );
        assert!(st["apps"]["web"]["switching"].is_null(), "{step}");
    }
}

#[test]
fn the_plaintext_is_written_nowhere_but_the_apps_secrets() {
    const PLAIN: &str = "PLAINTEXT-NEVER-ELSEWHERE-7f3a9c";
    let mut w = world();
    let v1 = w.make_release("v1", true, &[]);
    manifest(&w, "v1", &v1);
    seal(&w, &format!("SECRET={PLAIN}"));
    w.commit("web v1");
    let metrics_port = common::free_port();
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("listen: \"\"", &format!("listen: 127.0.0.1:{metrics_port}"));
    std::fs::write(w.config_path(), cfg).unwrap();
    w.start_daemon();
    assert!(
        w.wait_for(std::time::Duration::from_secs(60), || env_of_app(&w)
            .is_some_and(|e| e.contains(PLAIN))),
        "{}",
        w.daemon_log()
    );
    // A secret change and an unhealthy release, so every path has run.
    seal(&w, &format!("SECRET={PLAIN}-2"));
    let sick = w.make_release("v2-sick", true, &["UNHEALTHY"]);
    manifest(&w, "v2-sick", &sick);
    let c2 = w.commit("v2 sick");
    assert!(
        w.wait_for(std::time::Duration::from_secs(60), || w
            .final_status(&c2)
            .is_some_and(|s| s.0 == "failure")),
        "{}",
        w.daemon_log()
    );
    let (_, metrics) = common::http_get(metrics_port, "/metrics").unwrap();
    assert!(!metrics.contains(PLAIN));
    w.stop_daemon();
    assert!(
        !w.daemon_log().contains(PLAIN),
        "the log holds the plaintext"
    );
    let status = w.hoist(&["status", "--json"]);
    let history = w.hoist(&["history", "--json"]);
    for out in [status, history] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains(PLAIN));
    }

    // Every file of the world but the app's secrets: state, history,
    // cache, statuses, pm2's home and logs, releases, ecosystems.
    let mut holders = Vec::new();
    let secrets_dir = w.path("srv/web/secrets");
    let mut stack = vec![w.path("")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if p.starts_with(&secrets_dir) || ft.is_symlink() {
                continue;
            }
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && std::fs::read(&p)
                    .map(|b| String::from_utf8_lossy(&b).contains(PLAIN))
                    .unwrap_or(false)
            {
                holders.push(p);
            }
        }
    }
    assert!(holders.is_empty(), "the plaintext is in {holders:?}");
    // It is where it belongs.
    let (_, text) = live_secret(&w);
    assert!(text.contains(PLAIN));
}
