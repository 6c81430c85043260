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
