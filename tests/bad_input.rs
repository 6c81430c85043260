//! Bad input against a server with a release live under pm2: every mistake
//! a new user or a hostile tester makes must give one sentence naming the
//! file, key or URL, the exit code of SPEC §5 (2 for configuration), print
//! nothing the user did not write, and leave the live release serving.

mod common;

use common::World;
use std::time::Duration;

/// A world whose app `web` runs v1 under pm2.
fn live() -> World {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    w
}

/// What a command printed: (exit code, stdout, stderr).
fn run(w: &World, args: &[&str]) -> (Option<i32>, String, String) {
    let out = w.hoist(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The live release is untouched: still serving v1, its pm2 process online.
fn still_live(w: &World) {
    assert_eq!(
        w.app_says().as_deref(),
        Some("v1"),
        "the app stopped serving"
    );
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    let procs = w.pm2_list();
    assert!(
        procs
            .iter()
            .any(|p| p["name"] == "web" && p["pm2_env"]["status"] == "online"),
        "{procs:?}"
    );
}

/// One error line on stderr, naming each of `names`, exit `code`.
fn refused(w: &World, args: &[&str], code: i32, names: &[&str]) -> String {
    let (got, out, err) = run(w, args);
    assert_eq!(
        got,
        Some(code),
        "hoist {args:?}: stdout {out:?} stderr {err:?}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one sentence, not {lines:?}");
    for n in names {
        assert!(
            err.contains(n),
            "hoist {args:?}: {err:?} does not name {n:?}"
        );
    }
    err
}

/// `hoist check` of the world's checkout: (exit code, stderr).
fn check(w: &World) -> (Option<i32>, String) {
    let (code, _, err) = run(w, &["check", w.path("work").to_str().unwrap()]);
    (code, err)
}

/// The commit `c` is refused whole: `hoist once` exits 1 naming `names`,
/// the commit's status is `error` naming them too, and v1 keeps serving.
fn commit_refused(w: &World, c: &str, names: &[&str]) {
    let (code, out, err) = run(w, &["once"]);
    assert_eq!(code, Some(1), "stdout {out:?} stderr {err:?}");
    for n in names {
        assert!(err.contains(n), "{err:?} does not name {n:?}");
    }
    let (state, desc) = w.final_status(c).expect("a status for the commit");
    assert_eq!(state, "error", "{desc}");
    for n in names {
        assert!(desc.contains(n), "status {desc:?} does not name {n:?}");
    }
    still_live(w);
}

/// Host configs that cannot work: `hoist once` (and `hoist plan`, but for
/// credential files) refuse each with exit 2, naming the key (and the file and line where the
/// parser knows it), and deploy, remove or create nothing.
#[test]
fn host_config_mistakes_exit_2_naming_the_key_and_leave_the_app_serving() {
    let w = live();
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    let cfg = w.config_path().display().to_string();
    let root = w.dir.path().display().to_string();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let with = |old: &str, new: &str| {
        assert!(good.contains(old), "{old}");
        good.replacen(old, new, 1)
    };
    let dup = with("keep_releases: 3\n", "keep_releases: 3\nkeep_releases: 4\n");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "jitter longer than the poll interval",
            with("  jitter: 0s\n", "  jitter: 1h\n"),
            vec![
                format!("{cfg}:"),
                "repo.jitter".into(),
                "repo.poll_interval".into(),
            ],
        ),
        (
            "a key written twice",
            dup.clone(),
            vec![
                format!("{cfg}:{}:", line_of(&dup, "keep_releases: 4")),
                "keep_releases is written twice".into(),
            ],
        ),
        (
            "a missing repo.token_file",
            with(
                "  jitter: 0s\n",
                "  jitter: 0s\n  token_file: /nonexistent/git-token\n",
            ),
            vec![
                format!("{cfg}:"),
                "repo.token_file".into(),
                "/nonexistent/git-token".into(),
            ],
        ),
        (
            "a missing status.token_file",
            with(
                "status:\n  provider: file\n",
                "status:\n  provider: github\n  repository: acme/deploy\n  token_file: /nonexistent/forge-token\n",
            ),
            vec![
                "status.token_file".into(),
                "/nonexistent/forge-token".into(),
            ],
        ),
        (
            "a local repository that does not exist",
            with(
                &format!("url: file://{root}/config.git"),
                "url: /nonexistent/config.git",
            ),
            vec![
                "repo.url".into(),
                "/nonexistent/config.git".into(),
                "does not exist".into(),
            ],
        ),
        (
            "a state_dir whose parent is missing",
            with(
                &format!("state_dir: {root}/state"),
                &format!("state_dir: {root}/nosuch/state"),
            ),
            vec!["state_dir".into(), format!("{root}/nosuch")],
        ),
        (
            "a pm2.command that does not exist",
            with(
                &format!("command: {}", w.pm2.display()),
                "command: /nonexistent/bin/pm2",
            ),
            vec!["pm2.command".into(), "/nonexistent/bin/pm2".into()],
        ),
        (
            "a pm2.command not on PATH",
            with(
                &format!("command: {}", w.pm2.display()),
                "command: pm2-not-installed",
            ),
            vec![
                "pm2.command".into(),
                "pm2-not-installed".into(),
                "PATH".into(),
            ],
        ),
    ];
    for (what, text, names) in cases {
        std::fs::write(w.config_path(), &text).unwrap();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // `plan` is run from an operator's shell, which may not see the
        // service's credential files: it does not check them up front.
        let credential = what.contains("token_file");
        let cmds: &[&str] = if credential {
            &["once"]
        } else {
            &["once", "plan"]
        };
        for cmd in cmds {
            let err = refused(&w, &[cmd], 2, &names);
            assert!(!err.contains("unsupported URL protocol"), "{what}: {err}");
        }
        still_live(&w);
        assert!(
            !w.path("nosuch").exists(),
            "{what}: a mistyped path was created"
        );
    }
    std::fs::write(w.config_path(), &good).unwrap();
    w.once(0);
}

/// A mistyped `state_dir` made `hoist status` say "no apps deployed yet"
/// and exit 0; `hoist history <unknown app>` printed nothing.
#[test]
fn status_and_history_refuse_what_does_not_exist() {
    let w = live();
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    let root = w.dir.path().display().to_string();
    std::fs::write(
        w.config_path(),
        good.replace(
            &format!("state_dir: {root}/state"),
            &format!("state_dir: {root}/stat"),
        ),
    )
    .unwrap();
    for cmd in ["status", "history"] {
        refused(&w, &[cmd], 2, &["state_dir", &format!("{root}/stat")]);
    }
    assert!(!w.path("stat").exists());
    std::fs::write(w.config_path(), &good).unwrap();
    let (code, out, _) = run(&w, &["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("web: v1"), "{out}");

    refused(&w, &["history", "nosuch"], 2, &["\"nosuch\"", "web"]);
    let (code, out, _) = run(&w, &["history", "web"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("web v1"), "{out}");
}

/// A glob hoist cannot match (`[12]` is not supported) used to pass `hoist
/// check` and then leave the app silently "not here" on every server.
#[test]
fn a_host_glob_hoist_cannot_match_is_refused_by_check_and_by_the_server() {
    let w = live();
    let (url, sha) = w.make_release("v2", true, &[]);
    w.manifest(
        "web",
        "v2",
        &url,
        &sha,
        "targets:\n  hosts: [\"web-[12]\"]\n",
    );
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    let line = std::fs::read_to_string(w.path("work/apps/web.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("web-[12]"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("apps/web.yaml:{line}: targets.hosts[0]")),
        "{err}"
    );
    let c = w.commit("web v2 on web-[12]");
    commit_refused(&w, &c, &["apps/web.yaml", "targets.hosts[0]"]);
}

/// `hoist plan`'s word on the branch tip: its stdout.
fn plan(w: &World) -> String {
    let (code, out, err) = run(w, &["plan"]);
    assert_eq!(code, Some(0), "plan: {out} {err}");
    out
}

/// A mistyped `repo.path` used to read as "no apps": `hoist once` printed
/// `web removed`, deleted every pm2 process and posted `success`. Now the
/// server, `plan` and `check` all call the commit invalid.
#[test]
fn a_mistyped_repo_path_changes_nothing_and_server_plan_and_check_agree() {
    let mut w = live();
    w.repo_extra = "  path: nosuchdir\n".into();
    w.write_config();
    let c = w.commit("an unrelated commit");
    let out = plan(&w);
    assert!(
        out.contains("cannot be applied") && out.contains("nosuchdir"),
        "{out}"
    );
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("nosuchdir: the manifest folder is missing"),
        "{err}"
    );
    commit_refused(&w, &c, &["nosuchdir", "missing"]);
    assert!(w.history().iter().all(|e| e["event"] != "remove"));
}

/// A commit that deletes the manifest folder is refused like a mistyped
/// path; a folder left with only a `.keep` removes every app, on purpose.
#[test]
fn a_commit_without_the_manifest_folder_is_refused_and_an_empty_folder_removes_every_app() {
    let w = live();
    std::fs::remove_dir_all(w.path("work/apps")).unwrap();
    let c = w.commit("delete apps/");
    assert!(plan(&w).contains("cannot be applied"));
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("apps: the manifest folder is missing"),
        "{err}"
    );
    commit_refused(&w, &c, &["apps", "missing"]);

    std::fs::create_dir_all(w.path("work/apps")).unwrap();
    std::fs::write(w.path("work/apps/.keep"), "").unwrap();
    let c = w.commit("no apps, on purpose");
    let (code, _) = check(&w);
    assert_eq!(code, Some(0));
    let out = plan(&w);
    assert!(out.contains("web: no longer deployed here"), "{out}");
    let out = w.once(0);
    assert!(out.contains("web removed"), "{out}");
    assert_eq!(w.final_status(&c).unwrap().0, "success");
    assert!(w.pm2_list().iter().all(|p| p["name"] != "web"));
}

/// A manifest that is a symlink to the forge token: `hoist check` printed
/// the token (and any file the runner could read), the daemon read the
/// link's text. Both now refuse it by its kind, unread.
#[test]
fn a_symlinked_manifest_is_refused_unread_by_check_and_by_the_server() {
    let w = live();
    let token = w.path("forge-token");
    std::fs::write(&token, "forge-token-0123456789abcdef\n").unwrap();
    std::os::unix::fs::symlink(&token, w.path("work/apps/evil.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", w.path("work/apps/passwd.yaml")).unwrap();
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("apps/evil.yaml: is a symlink"), "{err}");
    assert!(err.contains("apps/passwd.yaml: is a symlink"), "{err}");
    for leaked in ["forge-token-", "root:", token.to_str().unwrap()] {
        assert!(!err.contains(leaked), "check printed {leaked:?}: {err}");
    }
    let c = w.commit("a symlink");
    commit_refused(&w, &c, &["apps/evil.yaml", "symlink"]);
    let everything = format!("{:?}{:?}{}", w.statuses(), w.history(), w.daemon_log());
    assert!(!everything.contains("forge-token-"), "{everything}");
}

/// A folder named like a manifest was silently ignored; `.yml` and other
/// files are not manifests either.
#[test]
fn anything_but_a_regular_yaml_file_in_the_manifest_folder_is_refused() {
    let w = live();
    std::fs::create_dir_all(w.path("work/apps/api.yaml")).unwrap();
    std::fs::write(w.path("work/apps/api.yaml/web.yaml"), "").unwrap();
    std::fs::write(w.path("work/apps/notes.txt"), "hello\n").unwrap();
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("apps/api.yaml: is a folder"), "{err}");
    assert!(err.contains("apps/notes.txt: is not a manifest"), "{err}");
    let c = w.commit("a folder named api.yaml");
    commit_refused(&w, &c, &["apps/api.yaml", "is a folder"]);
}

/// The inventory of the server's environment is validated in every commit,
/// like a manifest, by the server and by `hoist check`.
#[test]
fn an_invalid_inventory_makes_the_commit_invalid() {
    let w = live();
    std::fs::create_dir_all(w.path("work/fleet")).unwrap();
    std::fs::write(
        w.path("work/fleet/test.yaml"),
        "hosts:\n  web-1:\n    labels: [web]\n    lables: [oops]\n",
    )
    .unwrap();
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("fleet/test.yaml:4:"), "{err}");
    let c = w.commit("a broken inventory");
    commit_refused(&w, &c, &["fleet/test.yaml:4:", "lables"]);
}

/// `hoist publish ... --release ../../../escaped` wrote two folders above
/// the `--to` prefix, and `--release ../x` wrote `pub/web-../x.tar.zst`:
/// the release name was only checked with `--manifest`.
#[test]
fn publish_refuses_a_release_name_that_is_not_one_and_writes_nothing() {
    let w = World::new();
    let build = w.path("build/web");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("server.js"), common::APP_JS).unwrap();
    let pubdir = w.path("store/a/b/pub");
    std::fs::create_dir_all(&pubdir).unwrap();
    let to = format!("file://{}/", pubdir.display());
    let before = files_under(w.dir.path());
    for release in ["../../../escaped", "../x", "a/b", ".."] {
        let err = refused(
            &w,
            &[
                "publish",
                build.to_str().unwrap(),
                "--to",
                &to,
                "--release",
                release,
            ],
            2,
            &["--release", release],
        );
        assert!(err.contains("invalid release"), "{err}");
        assert_eq!(
            files_under(w.dir.path()),
            before,
            "{release}: something was written"
        );
    }
    // A good name lands right under the prefix.
    let (code, out, err) = run(
        &w,
        &[
            "publish",
            build.to_str().unwrap(),
            "--to",
            &to,
            "--release",
            "1.0",
        ],
    );
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(pubdir.join("web-1.0.tar.zst").is_file());
}

/// Every file below `dir`, relative.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// `hoist rollback web --to ../../x` would have pointed `current` outside
/// the app's releases; it is refused before anything is touched, locally
/// and by a running daemon asked over its control socket.
#[test]
fn rollback_refuses_a_release_name_that_is_not_one() {
    let mut w = live();
    // Something for `releases/../../x` to resolve to.
    std::fs::create_dir_all(w.path("srv/x")).unwrap();
    std::fs::write(w.path("srv/x/server.js"), common::APP_JS).unwrap();
    for to in ["../../x", "..", "a/b"] {
        refused(&w, &["rollback", "web", "--to", to], 2, &["--to", to]);
        still_live(&w);
    }
    w.start_daemon();
    let sock = w.path("state/control.sock");
    assert!(
        w.wait_for(Duration::from_secs(30), || sock.exists()),
        "{}",
        w.daemon_log()
    );
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"cmd\":\"rollback\",\"app\":\"web\",\"to\":\"../../x\"}\n")
        .unwrap();
    let mut reply = String::new();
    std::io::BufReader::new(s).read_line(&mut reply).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("invalid release"),
        "{reply}"
    );
    still_live(&w);
}

/// The status of a checksum mismatch was cut at 140 characters in the
/// middle of a hash; digests are shortened (and marked) so it fits.
#[test]
fn a_checksum_mismatch_status_fits_without_a_cut_hash() {
    let w = live();
    let (url, _) = w.make_release("v2", true, &[]);
    let wrong = "0123456789abcdef".repeat(4);
    w.manifest("web", "v2", &url, &wrong, "");
    let c = w.commit("web v2 with the wrong sha256");
    let (code, _, err) = run(&w, &["once"]);
    assert_eq!(code, Some(1), "{err}");
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.chars().count() <= 140, "{desc}");
    assert!(desc.contains("checksum mismatch"), "{desc}");
    assert!(desc.contains("0123456789ab…"), "{desc}");
    for run in desc.split(|c: char| !c.is_ascii_hexdigit()) {
        assert!(run.len() <= 12, "a cut hash {run:?} in {desc:?}");
    }
    // The log and the history keep the whole digests.
    assert!(err.contains(&wrong), "{err}");
    still_live(&w);
}

/// A key written twice in a manifest was reported at line 1 (or, inside a
/// pm2 `env`, not at all: the last value won); a bad value found after
/// parsing was reported at the first line holding the same text. Both are
/// now at their own line, from `hoist check` and from the server.
#[test]
fn a_manifest_key_written_twice_or_a_bad_value_is_reported_at_its_own_line() {
    let w = live();
    let (url, sha) = w.make_release("v2", true, &[]);
    // `env` written twice in one pm2 entry: first without the port, then with.
    w.manifest("web", "v2", &url, &sha, "");
    let path = w.path("work/apps/web.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "    script: server.js\n",
        "    script: server.js\n    env: { NODE_ENV: production }\n",
    );
    std::fs::write(&path, &text).unwrap();
    let first = text.lines().position(|l| l.contains("NODE_ENV")).unwrap() + 1;
    let second = text.lines().position(|l| l.contains("PORT")).unwrap() + 1;
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    let want =
        format!("apps/web.yaml:{second}: pm2[0].env is written twice (first at line {first})");
    assert!(err.contains(&want), "{err}");
    let c = w.commit("web v2, env twice");
    commit_refused(&w, &c, &[&format!("apps/web.yaml:{second}:"), "pm2[0].env"]);

    // A stable_for longer than the timeout, with the same text in a comment
    // above it: the line is the key's.
    w.manifest("web", "v2", &url, &sha, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = format!(
        "# stable_for: 1s is what we had\n{}",
        text.replace("stable_for: 1s", "stable_for: 1m")
    );
    std::fs::write(&path, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.trim() == "stable_for: 1m")
        .unwrap()
        + 1;
    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("apps/web.yaml:{line}: health.stable_for")),
        "{err}"
    );
    let c = w.commit("web v2, stable_for too long");
    commit_refused(
        &w,
        &c,
        &[&format!("apps/web.yaml:{line}:"), "health.stable_for"],
    );
}

/// Under the systemd unit the secret files are credentials only the service
/// sees: the start-up check of `*_file` keys must not stop an operator's
/// emergency rollback, which needs none of them.
#[test]
fn an_emergency_rollback_needs_none_of_the_credential_files() {
    let mut w = live();
    let (url, sha) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url, &sha, "");
    w.commit("web v2");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    w.extra_config = "webhook_secret_file: /run/credentials/hoist.service/webhook-secret\n".into();
    w.write_config();
    refused(&w, &["once"], 2, &["webhook_secret_file"]);
    let (code, out, err) = run(&w, &["rollback", "web"]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
}

/// `hoist check` takes the manifest folder from the host config; one that
/// is there but does not load used to be replaced by the default silently.
#[test]
fn check_says_when_its_host_config_does_not_load() {
    let w = World::new();
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    std::fs::write(
        w.config_path(),
        good.replace("  branch: main\n", "  branch: main\n  pth: deploy\n"),
    )
    .unwrap();
    let (code, err) = check(&w);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("hoist.yaml:") && err.contains("pth"), "{err}");
    std::fs::write(w.config_path(), &good).unwrap();
    let (code, err) = check(&w);
    assert_eq!(code, Some(0), "{err}");
}

/// A rollout needs `{host}` in the status context: without it every server
/// would report under one context. The server refuses such a commit
/// (`error`, naming `status.context`, posted under the context as it is),
/// and `hoist check` refuses it with the context of the config it is given,
/// or accepts it with the default one. Two apps with rollouts on one host
/// status are a warning.
#[test]
fn a_status_context_without_host_refuses_a_rollout_on_the_server_and_in_check() {
    let mut w = live();
    let root = w.dir.path().display().to_string();
    let cfg = w.config_path().display().to_string();
    w.status_config = Some(format!(
        "status:\n  provider: file\n  path: {root}/statuses.jsonl\n  context: \"hoist/{{environment}}\"\n"
    ));
    w.write_config();
    let waves = "rollout:\n  waves:\n    - { percent: 100 }\n";
    let (url, sha) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url, &sha, waves);

    let (code, err) = check(&w);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{cfg}: status.context \"hoist/{{environment}}\" has no {{host}}"
        )),
        "{err}"
    );

    let c = w.commit("web v2 in waves");
    commit_refused(&w, &c, &["status.context", "{host}"]);
    let posted: Vec<_> = w.statuses().into_iter().filter(|s| s.0 == c).collect();
    assert!(!posted.is_empty());
    assert!(posted.iter().all(|s| s.2 == "hoist/test"), "{posted:?}");

    // Without a host config (CI), the default context, which holds
    // {host}: valid.
    let o = std::process::Command::new(common::hoist_bin())
        .args(["check", w.path("work").to_str().unwrap()])
        .env("HOIST_CONFIG", w.path("no-such-config.yaml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");

    // Two apps with rollouts on one host status: valid, with a warning.
    w.status_config = None;
    w.write_config();
    w.manifest("api", "v2", &url, &sha, waves);
    let (code, _, err) = run(&w, &["check", w.path("work").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("warning:"), "{err}");
    assert!(
        err.contains("has no {app}, and api, web roll out in waves"),
        "{err}"
    );
}
