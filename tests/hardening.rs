//! One test per finding of the review of sealed secrets and least
//! privilege, each through the real binary: what an admin's secrets
//! commands read, what a secret may replace, where hook output goes,
//! `secrets edit` interrupted, credential files others can read, a missing
//! identity, the inventory's labels, the emergency commands without
//! credentials, pm2's colours in statuses, the one validator for the
//! fleet folder, and a corrupt state.json.

mod common;

use common::{World, hoist_bin, http_get};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A manifest for `web` without the world's default `shared: [.env]`.
fn manifest(w: &World, app: &str, port: u16, release: &str, url: &str, sha: &str, extra: &str) {
    let text = format!(
        "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\npm2:\n  - name: {app}\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  timeout: 15s\n  stable_for: 1s\n{extra}"
    );
    std::fs::write(w.path(&format!("work/apps/{app}.yaml")), text).unwrap();
}

const WITH_SECRETS: &str = "secrets:\n  - from: secrets/{environment}/web.env.age\n    to: .env\n";

/// `hoist keygen -o <path>`: the public key.
fn keygen(path: &Path) -> String {
    let out = Command::new(hoist_bin())
        .args(["keygen", "-o"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Seals `plain` to the recipients of `fleet/test.yaml` for `app` into
/// `rel` of the world's working clone.
fn seal(w: &World, app: &str, rel: &str, plain: &str) {
    use std::io::Write;
    let out = w.path("work").join(rel);
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = Command::new(hoist_bin())
        .args(["secrets", "seal", "--env", "test", "--app", app, "--repo"])
        .arg(w.path("work"))
        .arg("-")
        .arg(&out)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plain.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A world whose server has an identity (listed in fleet/test.yaml with
/// its labels) and an admin key; returns the admin's identity file.
fn world_with_keys() -> (World, PathBuf) {
    let mut w = World::new();
    std::fs::create_dir_all(w.path("etc")).unwrap();
    let host_key = keygen(&w.path("etc/identity"));
    let admin = w.path("etc/admin");
    let admin_key = keygen(&admin);
    std::fs::create_dir_all(w.path("work/fleet")).unwrap();
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        format!(
            "hosts:\n  web-1: {{ labels: [web], key: \"{host_key}\" }}\nadmins:\n  - \"{admin_key}\"\n"
        ),
    )
    .unwrap();
    w.extra_config = format!("identity_file: {}\n", w.path("etc/identity").display());
    w.write_config();
    (w, admin)
}

#[test]
fn secrets_commands_never_follow_a_sealed_file_that_is_a_link() {
    let (w, admin) = world_with_keys();
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(&w, "web", w.app_port, "v1", &url, &sha, WITH_SECRETS);
    seal(&w, "web", "secrets/test/web.env.age", "WEB=1\n");
    // An age file only the admin can open, somewhere the admin can read;
    // a pull request replaces web.env.age by a link to it and adds a key.
    let private = w.path("admin-only.age");
    let out = Command::new(hoist_bin())
        .args(["secrets", "seal", "--env", "test", "--repo"])
        .arg(w.path("work"))
        .arg(w.path("etc/admin-plain"))
        .arg(&private)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the plaintext file is not there yet");
    std::fs::write(w.path("etc/admin-plain"), "ADMIN-ONLY-PLAINTEXT\n").unwrap();
    let out = Command::new(hoist_bin())
        .args(["secrets", "seal", "--env", "test", "--repo"])
        .arg(w.path("work"))
        .arg(w.path("etc/admin-plain"))
        .arg(&private)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let private_before = std::fs::read(&private).unwrap();
    let sealed = w.path("work/secrets/test/web.env.age");
    std::fs::remove_file(&sealed).unwrap();
    std::os::unix::fs::symlink(&private, &sealed).unwrap();
    let intruder = keygen(&w.path("etc/intruder"));
    let inv = std::fs::read_to_string(w.path("work/fleet/test.yaml")).unwrap();
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        inv.replace(
            "admins:",
            &format!("  web-9: {{ labels: [web], key: \"{intruder}\" }}\nadmins:"),
        ),
    )
    .unwrap();

    let hoist = |args: &[&str], editor: &str| {
        Command::new(hoist_bin())
            .args(args)
            .arg("--identity")
            .arg(&admin)
            .arg("--repo")
            .arg(w.path("work"))
            .arg("--config")
            .arg(w.path("none.yaml"))
            .env("EDITOR", editor)
            .env("XDG_RUNTIME_DIR", w.path("etc"))
            .output()
            .unwrap()
    };
    let out = hoist(&["secrets", "rekey"], "true");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("secrets/test/web.env.age (named by web in test) is a symlink"),
        "{}",
        text(&out)
    );
    let edit_as = |file: &Path| {
        let mut args = vec!["secrets", "edit"];
        let f = file.to_str().unwrap().to_string();
        args.push(Box::leak(f.into_boxed_str()));
        hoist(&args, "sed -i s/ADMIN/INTRUDER/")
    };
    let out = edit_as(&sealed);
    assert!(!out.status.success());
    assert!(text(&out).contains("is a symlink"), "{}", text(&out));
    // A folder on the way that is a link is refused too.
    std::fs::rename(w.path("work/secrets/test"), w.path("work/secrets/real")).unwrap();
    std::fs::create_dir_all(w.path("work/secrets/real")).unwrap();
    std::fs::remove_file(w.path("work/secrets/real/web.env.age")).unwrap();
    std::fs::copy(&private, w.path("work/secrets/real/web.env.age")).unwrap();
    std::os::unix::fs::symlink("real", w.path("work/secrets/test")).unwrap();
    let out = hoist(&["secrets", "rekey"], "true");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("lies behind a symlink"),
        "{}",
        text(&out)
    );
    let out = edit_as(&sealed);
    assert!(!out.status.success());
    assert!(text(&out).contains("symlink"), "{}", text(&out));
    let check = Command::new(hoist_bin())
        .arg("check")
        .arg(w.path("work"))
        .arg("--config")
        .arg(w.path("none.yaml"))
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("symlink"), "{}", text(&check));

    // Nothing was opened for the intruder: the admin's file is as it was,
    // and no file in the repo holds anything the intruder can open.
    assert_eq!(std::fs::read(&private).unwrap(), private_before);
    assert_eq!(
        std::fs::read(w.path("work/secrets/real/web.env.age")).unwrap(),
        private_before
    );
    for f in [w.path("work/secrets/real/web.env.age"), private.clone()] {
        let out = Command::new(hoist_bin())
            .args(["secrets", "open"])
            .arg(&f)
            .arg("--identity")
            .arg(w.path("etc/intruder"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", text(&out));
    }
}

#[test]
fn a_secret_may_not_replace_a_file_of_the_release() {
    let (w, _) = world_with_keys();
    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(&w, "web", w.app_port, "v1", &u1, &s1, "");
    w.commit("v1");
    w.once(0);
    let (u2, s2) = w.make_release("v2", true, &[]);
    manifest(
        &w,
        "web",
        w.app_port,
        "v2",
        &u2,
        &s2,
        "secrets:\n  - from: secrets/{environment}/web.env.age\n    to: server.js\n",
    );
    seal(
        &w,
        "web",
        "secrets/test/web.env.age",
        "console.log('not the app')\n",
    );
    let c2 = w.commit("v2 puts a secret over server.js");
    let out = w.once(1);
    assert!(
        out.contains("secrets[0].to server.js would replace a file of the release"),
        "{out}"
    );
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.contains("server.js"), "{desc}");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    // Held for the commit: the next poll does not try it again.
    let again = w.once(1);
    assert!(!again.contains("deploying"), "{again}");
    assert!(!w.path("srv/web/releases/v2").exists());
}

#[test]
fn hook_output_goes_to_a_file_of_the_app_never_to_the_log() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(
        &w,
        "web",
        w.app_port,
        "v1",
        &url,
        &sha,
        // What it prints is computed, so the command line (which errors
        // may quote) does not hold it.
        "hooks:\n  before_activate: [[sh, -c, 'echo OUT-$((5000+21)); echo DB_PASSWORD=pw$((7000+77)) >&2; exit 3']]\n",
    );
    let c = w.commit("v1 with a failing hook");
    let out = w.hoist_env(&["once"], &[("HOIST_LOG", "trace"), ("RUST_LOG", "trace")]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "{log}");
    for needle in ["OUT-5021", "pw7077"] {
        assert!(
            !log.contains(needle),
            "the hook's output reached hoist's log: {log}"
        );
    }
    let failure = w
        .history()
        .into_iter()
        .find(|e| e["event"] == "failure")
        .expect("a failure event");
    let output = failure["output"]
        .as_str()
        .expect("it names the output file");
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("exited with 3; its output is in"),
        "{message}"
    );
    assert!(message.contains(output), "{message}");
    let file = std::fs::read_to_string(output).unwrap();
    assert!(
        file.contains("OUT-5021") && file.contains("DB_PASSWORD=pw7077"),
        "{file}"
    );
    assert!(file.contains("# exit code: 3"), "{file}");
    assert_eq!(
        std::fs::metadata(output).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(Path::new(output).starts_with(w.path("srv/web/hooks")));
    for s in w.statuses() {
        assert!(
            !s.3.contains("pw7077") && !s.3.contains("OUT-5021"),
            "{s:?}"
        );
    }
    assert_eq!(w.final_status(&c).unwrap().0, "failure");
    let hist = std::fs::read_to_string(w.path("state/history.jsonl")).unwrap();
    assert!(
        !hist.contains("pw7077") && !hist.contains("OUT-5021"),
        "{hist}"
    );
    let shown = text(&w.hoist(&["history"]));
    assert!(
        shown.contains(&format!("hooks' output: {output}")),
        "{shown}"
    );
}

/// `hoist secrets edit` stopped by a signal while the editor runs: the
/// plaintext copy is gone and the file unchanged; after a `kill -9`, the
/// next edit removes what was left.
#[test]
fn secrets_edit_removes_its_plaintext_when_stopped() {
    let (w, admin) = world_with_keys();
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(&w, "web", w.app_port, "v1", &url, &sha, WITH_SECRETS);
    seal(&w, "web", "secrets/test/web.env.age", "EDIT-PLAINTEXT-41\n");
    let sealed = w.path("work/secrets/test/web.env.age");
    let before = std::fs::read(&sealed).unwrap();
    let run = w.path("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let marker = w.path("editing");
    // The editor says where the copy is and its pid, then waits.
    let editor = format!(
        "f() {{ echo \"$$ $1\" > {}; exec sleep 60; }}; f",
        marker.display()
    );
    let scratch = |run: &Path| -> Vec<String> {
        std::fs::read_dir(run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("hoist-edit-"))
            .collect()
    };
    let edit = || {
        Command::new(hoist_bin())
            .args(["secrets", "edit"])
            .arg(&sealed)
            .arg("--identity")
            .arg(&admin)
            .arg("--repo")
            .arg(w.path("work"))
            .arg("--config")
            .arg(w.path("none.yaml"))
            .env("EDITOR", &editor)
            .env("XDG_RUNTIME_DIR", &run)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_editing = || {
        assert!(w.wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&marker).is_ok_and(|t| t.ends_with('\n'))
        }));
        let said = std::fs::read_to_string(&marker).unwrap();
        let (pid, copy) = said.trim().split_once(' ').unwrap();
        let copy = PathBuf::from(copy);
        assert_eq!(
            std::fs::read_to_string(&copy).unwrap(),
            "EDIT-PLAINTEXT-41\n"
        );
        std::fs::remove_file(&marker).unwrap();
        (nix::unistd::Pid::from_raw(pid.parse().unwrap()), copy)
    };
    let alive = |pid: nix::unistd::Pid| nix::sys::signal::kill(pid, None).is_ok();
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let child = edit();
        let (editor_pid, copy) = wait_editing();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            w.wait_for(Duration::from_secs(5), || !alive(editor_pid)),
            "{sig}: the editor was left running"
        );
        assert_eq!(out.status.code(), Some(1), "{sig}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("stopped by {sig}")),
            "{}",
            text(&out)
        );
        assert!(!copy.exists(), "{sig}: the plaintext copy is still there");
        assert_eq!(scratch(&run), Vec::<String>::new(), "{sig}");
        assert_eq!(std::fs::read(&sealed).unwrap(), before, "{sig}");
    }
    // Killed outright: the copy stays until the next edit removes it.
    let mut child = edit();
    let (editor_pid, copy) = wait_editing();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(copy.exists());
    nix::sys::signal::kill(editor_pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = Command::new(hoist_bin())
        .args(["secrets", "edit"])
        .arg(&sealed)
        .arg("--identity")
        .arg(&admin)
        .arg("--repo")
        .arg(w.path("work"))
        .arg("--config")
        .arg(w.path("none.yaml"))
        .env("EDITOR", "true")
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the plaintext copy of an edit that was interrupted"),
        "{}",
        text(&out)
    );
    assert!(!copy.exists());
    assert_eq!(scratch(&run), Vec::<String>::new());
}

#[test]
fn an_identity_others_can_read_is_warned_about_like_a_token() {
    let (w, _) = world_with_keys();
    std::fs::write(w.path("etc/token"), "t\n").unwrap();
    for f in ["etc/identity", "etc/token"] {
        std::fs::set_permissions(w.path(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut w = w;
    w.extra_config = format!(
        "identity_file: {}\nwebhook_secret_file: {}\n",
        w.path("etc/identity").display(),
        w.path("etc/token").display()
    );
    w.write_config();
    w.commit("nothing");
    let out = w.once(0);
    for (key, f) in [
        ("identity_file", "etc/identity"),
        ("webhook_secret_file", "etc/token"),
    ] {
        let p = w.path(f).display().to_string();
        assert!(
            out.contains(&format!(
                "{key} {p} can be read by other users (mode 644); run: chmod 600 {p}"
            )),
            "{out}"
        );
    }
}

/// An `identity_file` that is not written yet fails only the apps that
/// have secrets, naming the file and `hoist keygen`.
#[test]
fn a_missing_identity_fails_only_the_apps_with_secrets() {
    let (mut w, _) = world_with_keys();
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(&w, "web", w.app_port, "v1", &url, &sha, WITH_SECRETS);
    seal(&w, "web", "secrets/test/web.env.age", "A=1\n");
    let api_port = common::free_port();
    manifest(&w, "api", api_port, "v1", &url, &sha, "");
    let c = w.commit("web with secrets, api without");
    let missing = w.path("etc/not-written-yet");
    w.extra_config = format!("identity_file: {}\n", missing.display());
    w.write_config();
    let out = w.once(1);
    assert_eq!(
        http_get(api_port, "/").map(|r| r.1).as_deref(),
        Some("v1"),
        "{out}"
    );
    assert_eq!(w.app_says(), None, "{out}");
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.contains("web"), "{desc}");
    let err = w.state_json()["apps"]["web"]["last_error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!(
            "identity_file {} does not exist: run `hoist keygen -o {}`",
            missing.display(),
            missing.display()
        )),
        "{err}"
    );
    for cmd in [&["plan"][..], &["status"], &["history"]] {
        let out = w.hoist(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    }
    // Written since: the next pass opens it, no restart needed.
    std::fs::copy(w.path("etc/identity"), &missing).unwrap();
    w.once(0);
    assert_eq!(http_get(w.app_port, "/env").unwrap().1, "A=1");
}

/// Adding a server's key without its labels would drop it from the apps
/// that target labels (and remove them): the commit is `error` instead.
#[test]
fn an_inventory_entry_without_labels_is_an_error_while_apps_target_labels() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(
        &w,
        "web",
        w.app_port,
        "v1",
        &url,
        &sha,
        "targets:\n  labels: [web]\n",
    );
    w.commit("web on servers labelled web");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    let key = keygen(&w.path("identity"));
    std::fs::create_dir_all(w.path("work/fleet")).unwrap();
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        format!("hosts:\n  web-1: {{ key: \"{key}\" }}\n"),
    )
    .unwrap();
    let c = w.commit("add web-1's key");
    let out = w.once(1);
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error", "{out}");
    assert!(
        desc.contains("web-1 has no labels; web targets [web]"),
        "{desc}"
    );
    assert_eq!(
        w.app_says().as_deref(),
        Some("v1"),
        "the app was not removed"
    );
    assert!(w.pm2_list().iter().any(|p| p["name"] == "web"));
    let check = w.hoist(&["check", w.path("work").to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        text(&check).contains("fleet/test.yaml:2: web-1 has no labels"),
        "{}",
        text(&check)
    );
    // `labels: []` says "none" on purpose, and is what it says.
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        format!("hosts:\n  web-1: {{ labels: [web], key: \"{key}\" }}\n"),
    )
    .unwrap();
    let c = w.commit("with its labels");
    w.once(0);
    assert_eq!(w.final_status(&c).unwrap().0, "success");
}

#[test]
fn keygen_prints_the_inventory_entry_with_the_host_labels() {
    let w = World::new();
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("labels: [web]", "labels: [web, eu-west]");
    std::fs::write(w.config_path(), cfg).unwrap();
    let out = w.hoist(&["keygen", "-o", w.path("id").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        key.starts_with("age1") && !key.contains(' '),
        "stdout is the key alone: {key}"
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("fleet/test.yaml"), "{said}");
    assert!(
        said.contains(&format!(
            "  web-1: {{ labels: [web, eu-west], key: \"{key}\" }}"
        )),
        "{said}"
    );
}

/// With the daemon stopped and the forge token unreadable (under the unit
/// it is a credential of the service alone), the emergency commands work.
#[test]
fn rollback_and_plan_need_no_forge_token() {
    let mut w = World::new();
    for v in ["v1", "v2"] {
        let (url, sha) = w.make_release(v, true, &[]);
        w.manifest("web", v, &url, &sha, "");
        w.commit(v);
        w.once(0);
    }
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    w.status_config = Some(format!(
        "status:\n  provider: github\n  api_url: https://api.github.example\n  repository: acme/deploy\n  token_file: {}\n",
        w.path("run/forge-token").display()
    ));
    w.extra_config = "storage:\n  s3:\n    region: us-east-1\n    access_key_id_file: /nonexistent/s3-key-id\n    secret_access_key_file: /nonexistent/s3-secret\n".into();
    w.write_config();
    let out = w.hoist(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = w.hoist(&["rollback", "web"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("from v2 to v1"), "{}", text(&out));
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    // A pass does need them, and says which file.
    let out = w.hoist(&["once"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot be read") || text(&out).contains("cannot read"),
        "{}",
        text(&out)
    );
}

#[test]
fn statuses_and_history_carry_no_control_characters() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    let port = w.app_port;
    std::fs::write(
        w.path("work/apps/web.yaml"),
        format!("release: v1\nartifact:\n  url: {url}\n  sha256: {sha}\npm2:\n  - name: web\n    script: not-there.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  timeout: 5s\n  stable_for: 1s\n"),
    )
    .unwrap();
    let c = w.commit("a script that is not there");
    w.once(1);
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "failure");
    assert!(
        desc.contains("not-there.js") || desc.contains("pm2"),
        "{desc:?}"
    );
    for s in w.statuses() {
        assert!(!s.3.chars().any(char::is_control), "{:?}", s.3);
    }
    for e in w.history() {
        let m = e["message"].as_str().unwrap_or_default();
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }
}

/// A commit `hoist check` refuses is refused by the server too: the
/// fleet folder is read by one validator.
#[test]
fn check_and_the_server_refuse_the_same_fleet_folder() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("v1");
    w.once(0);
    type Break = fn(&Path);
    let cases: [(&str, Break, &str); 2] = [
        (
            "fleet as a file",
            |work| std::fs::write(work.join("fleet"), "x\n").unwrap(),
            "fleet: is a file",
        ),
        (
            "a stray .yml",
            |work| {
                std::fs::create_dir_all(work.join("fleet")).unwrap();
                std::fs::write(work.join("fleet/test.yml"), "hosts: {}\n").unwrap();
            },
            "fleet/test.yml: inventories must end in .yaml",
        ),
    ];
    for (what, make, msg) in cases {
        let work = w.path("work");
        make(&work);
        let check = w.hoist(&["check", work.to_str().unwrap()]);
        assert_eq!(check.status.code(), Some(1), "{what}: {}", text(&check));
        assert!(text(&check).contains(msg), "{what}: {}", text(&check));
        let c = w.commit(what);
        let out = w.once(1);
        let (state, desc) = w.final_status(&c).unwrap();
        assert_eq!(state, "error", "{what}: {out}");
        assert!(desc.contains(msg), "{what}: {desc}");
        assert_eq!(w.app_says().as_deref(), Some("v1"));
        let _ = std::fs::remove_file(work.join("fleet"));
        let _ = std::fs::remove_dir_all(work.join("fleet"));
    }
}

#[test]
fn a_corrupt_state_json_is_exit_1_naming_it_for_every_command() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("v1");
    w.once(0);
    let state = w.path("state/state.json");
    std::fs::write(&state, "{ not json").unwrap();
    for cmd in [
        &["once"][..],
        &["status"],
        &["plan"],
        &["rollback", "web"],
        &["retry", "web"],
    ] {
        let out = w.hoist(cmd);
        assert_eq!(out.status.code(), Some(1), "{cmd:?}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("{} is not valid hoist state", state.display())),
            "{cmd:?}: {}",
            text(&out)
        );
    }
}
