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

/// Host configs that cannot work: `hoist once` refuses each with exit 2,
/// naming the key (and the file and line where the parser knows it), and
/// deploys or removes nothing.
#[test]
fn host_config_mistakes_exit_2_naming_the_key_and_leave_the_app_serving() {
    let w = live();
    let good = std::fs::read_to_string(w.config_path()).unwrap();
    let cfg = w.config_path().display().to_string();
    let cases: Vec<(&str, String, Vec<String>)> = vec![(
        "jitter longer than the poll interval",
        good.replace("  jitter: 0s\n", "  jitter: 1h\n"),
        vec![
            format!("{cfg}:"),
            "repo.jitter".into(),
            "repo.poll_interval".into(),
        ],
    )];
    for (what, text, names) in cases {
        std::fs::write(w.config_path(), &text).unwrap();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let err = refused(&w, &["once"], 2, &names);
        eprintln!("{what}: {err}");
        still_live(&w);
    }
    std::fs::write(w.config_path(), &good).unwrap();
    let _ = Duration::ZERO;
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
