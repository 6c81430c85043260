//! Crash consistency (SPEC §3: "a crash or power loss at any moment leaves
//! each app on either its old or its new release, never a mix, and the next
//! start finishes or discards the unfinished work").
//!
//! For every named step of a deploy, `HOIST_FAULT_AT=<step>` makes the real
//! `hoist once` abort right after that step, as a crash would. The disk is
//! then checked as a restarted server would find it, and a second `hoist
//! once` must converge on the new release with nothing left over. A second
//! test SIGKILLs `hoist run` in the middle of deploys and restarts it.

mod common;

use common::World;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

/// What a restarted server finds: `current` names a complete release (v1 or
/// v2, never missing, never anything else), state.json parses, and a running
/// app answers with one of the two versions.
fn assert_old_or_new(w: &World, step: &str) -> String {
    let target = w
        .current_target("web")
        .unwrap_or_else(|| panic!("{step}: `current` is missing"));
    let release = target
        .strip_prefix("releases/")
        .unwrap_or_else(|| panic!("{step}: `current` -> {target}"))
        .to_string();
    assert!(
        release == "v1" || release == "v2",
        "{step}: current -> {target}"
    );
    let version = std::fs::read_to_string(w.path(&format!("srv/web/releases/{release}/VERSION")))
        .unwrap_or_else(|e| panic!("{step}: releases/{release} is incomplete: {e}"));
    assert_eq!(version.trim(), release, "{step}");
    assert!(
        w.path(&format!("srv/web/releases/{release}/server.js"))
            .is_file(),
        "{step}"
    );
    // state.json is whole (it parses) and coherent with the disk: it names
    // what `current` points at, or records the deploy in flight to it.
    let _ = w.state_json();
    let st = w.status_json();
    let recorded = st["apps"]["web"]["release"].as_str().unwrap_or("");
    assert!(recorded == "v1" || recorded == "v2", "{step}: {st}");
    if recorded != release {
        assert_eq!(
            st["apps"]["web"]["switching"]["to"],
            release.as_str(),
            "{step}: {st}"
        );
    }
    if let Some(says) = w.app_says() {
        assert!(says == "v1" || says == "v2", "{step}: the app says {says}");
    }
    release
}

/// After recovery and one more pass: v2 live everywhere, nothing pending,
/// nothing left over.
fn assert_converged_on_v2(w: &World, step: &str, c2: &str) {
    assert_eq!(w.app_says().as_deref(), Some("v2"), "{step}");
    assert_eq!(
        w.current_target("web").as_deref(),
        Some("releases/v2"),
        "{step}"
    );
    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["release"], "v2", "{step}: {st}");
    assert_eq!(st["apps"]["web"]["previous"], "v1", "{step}: {st}");
    assert!(st["apps"]["web"]["switching"].is_null(), "{step}: {st}");
    assert_eq!(st["apps"]["web"]["commit"], c2, "{step}: {st}");
    assert!(
        w.leftovers("web").is_empty(),
        "{step}: {:?}",
        w.leftovers("web")
    );
    assert_eq!(w.releases_on_disk("web"), vec!["v1", "v2"], "{step}");
    assert_eq!(w.final_status(c2).unwrap().0, "success", "{step}");
    w.assert_links_agree(step);
    let procs = w.pm2_list();
    assert_eq!(procs.len(), 1, "{step}: {procs:?}");
    assert_eq!(procs[0]["pm2_env"]["status"], "online", "{step}");
}

/// web on v1, then a commit to v2 that `hoist once` applies with a crash
/// after `step`; then a restart.
fn crash_after(step: &str) -> (String, Vec<serde_json::Value>) {
    let w = World::new();
    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    w.commit("web v1");
    w.once(0);

    let (url2, sha2) = w.make_release("v2", true, &[]);
    // A hook, so the `hooks` step does something.
    w.manifest(
        "web",
        "v2",
        &url2,
        &sha2,
        "hooks:\n  before_activate: [[\"true\"]]\n",
    );
    let c2 = w.commit("web v2");
    let out = w.hoist_env(&["once"], &[("HOIST_FAULT_AT", step)]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{step}: hoist did not abort: {text}"
    );
    assert!(
        text.contains(&format!("aborting after step {step}")),
        "{text}"
    );

    let on = assert_old_or_new(&w, step);
    // Before the swap the old release is current; from the swap on, the new.
    let swapped = matches!(step, "swap" | "reload" | "health" | "state-write");
    let expect = if swapped { "v2" } else { "v1" };
    // state-write happens after the state says v2; the others still say v1.
    if step != "state-write" {
        assert_eq!(on, expect, "{step}");
    }

    let restart = w.once(0);
    assert_converged_on_v2(&w, step, &c2);
    // A third pass has nothing to do.
    let events = w.history().len();
    w.once(0);
    assert_eq!(w.history().len(), events, "{step}: {restart}");
    (on, w.history())
}

fn events(history: &[serde_json::Value], kind: &str) -> usize {
    history.iter().filter(|e| e["event"] == kind).count()
}

#[test]
fn crash_after_download() {
    let (_, h) = crash_after("download");
    assert_eq!(events(&h, "recover"), 0);
}

#[test]
fn crash_after_unpack() {
    crash_after("unpack");
}

#[test]
fn crash_after_link() {
    crash_after("link");
}

#[test]
fn crash_after_hooks() {
    crash_after("hooks");
}

#[test]
fn crash_after_swap_is_undone_then_redone() {
    let (on, h) = crash_after("swap");
    assert_eq!(on, "v2");
    assert_eq!(events(&h, "recover"), 1, "{h:?}");
}

#[test]
fn crash_after_reload_is_undone_then_redone() {
    let (_, h) = crash_after("reload");
    assert_eq!(events(&h, "recover"), 1, "{h:?}");
}

#[test]
fn crash_after_health_is_undone_then_redone() {
    let (_, h) = crash_after("health");
    assert_eq!(events(&h, "recover"), 1, "{h:?}");
}

#[test]
fn crash_after_state_write_keeps_the_new_release() {
    let (on, h) = crash_after("state-write");
    assert_eq!(on, "v2");
    // The state already said v2 with nothing pending: nothing to undo.
    assert_eq!(events(&h, "recover"), 0, "{h:?}");
}

/// Runs `hoist <args>` with `HOIST_FAULT_AT=<point>` and checks it aborted there.
fn abort_at(w: &World, args: &[&str], point: &str) {
    let out = w.hoist_env(args, &[("HOIST_FAULT_AT", point)]);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{point}: hoist did not abort: {text}"
    );
    assert!(
        text.contains(&format!("aborting after step {point}")),
        "{text}"
    );
}

/// web on v1, then v2 live: what a local rollback starts from.
fn v1_then_v2(w: &World) -> String {
    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    w.commit("web v1");
    w.once(0);
    let (url2, sha2) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url2, &sha2, "");
    let c2 = w.commit("web v2");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    c2
}

#[test]
fn a_local_rollback_killed_after_its_swap_is_finished_at_the_next_start() {
    let w = World::new();
    v1_then_v2(&w);
    for point in ["local-rollback-swap", "local-rollback-reload"] {
        // From v2, `hoist rollback web` is killed after its swap: `current`
        // already names v1, state.json still says v2 with the change journalled.
        abort_at(&w, &["rollback", "web"], point);
        assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
        let st = w.status_json();
        assert_eq!(st["apps"]["web"]["release"], "v2", "{point}: {st}");
        assert_eq!(st["apps"]["web"]["switching"]["to"], "v1", "{point}: {st}");

        // The next start finishes it: link, state, pm2 and the pin agree.
        w.once(0);
        let st = w.status_json();
        assert_eq!(st["apps"]["web"]["release"], "v1", "{point}: {st}");
        assert!(st["apps"]["web"]["switching"].is_null(), "{point}: {st}");
        assert!(!st["apps"]["web"]["pinned"].is_null(), "{point}: {st}");
        assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
        assert_eq!(w.app_says().as_deref(), Some("v1"), "{point}");
        let procs = w.pm2_list();
        assert_eq!(procs.len(), 1, "{point}: {procs:?}");

        // Back to v2 for the next point, by a local rollback that finishes.
        let out = w.hoist(&["rollback", "web", "--to", "v2"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(w.app_says().as_deref(), Some("v2"));
    }
}

#[test]
fn an_automatic_rollback_killed_midway_is_finished_and_the_release_held() {
    for point in [
        "auto-rollback-swap",
        "auto-rollback-reload",
        "auto-rollback-state-write",
    ] {
        let w = World::new();
        v1_then_v2(&w);
        let (url3, sha3) = w.make_release("v3", false, &["CRASH"]);
        w.manifest("web", "v3", &url3, &sha3, "");
        let c3 = w.commit("web v3 crashes");
        abort_at(&w, &["once"], point);
        let _ = w.state_json();

        // Restarted: back on v2, v3 recorded as failed and not tried again.
        w.once(1);
        w.assert_links_agree(point);
        let st = w.status_json();
        assert_eq!(st["apps"]["web"]["release"], "v2", "{point}: {st}");
        assert_eq!(
            st["apps"]["web"]["failed"]["release"], "v3",
            "{point}: {st}"
        );
        assert!(st["apps"]["web"]["switching"].is_null(), "{point}: {st}");
        assert_eq!(w.current_target("web").as_deref(), Some("releases/v2"));
        assert_eq!(w.app_says().as_deref(), Some("v2"), "{point}");
        assert_eq!(w.final_status(&c3).unwrap().0, "failure", "{point}");
        let downloads = std::fs::read_dir(w.path("state/cache")).unwrap().count();
        w.once(1);
        assert_eq!(w.app_says().as_deref(), Some("v2"), "{point}");
        assert_eq!(
            std::fs::read_dir(w.path("state/cache")).unwrap().count(),
            downloads,
            "{point}"
        );
    }
}

/// The running release re-linked (one more shared file, which crashes
/// it): its re-linked copy is exchanged in, fails, and the automatic
/// rollback exchanges it back out; killed there and restarted, state.json
/// must describe the links of the directory that runs, or a later deploy
/// of the same layout would skip them.
#[test]
fn an_automatic_rollback_of_a_relinked_release_killed_midway_leaves_state_and_disk_agreeing() {
    for point in [
        "auto-rollback-swap",
        "auto-rollback-reload",
        "auto-rollback-state-write",
    ] {
        let w = World::new();
        let (url, sha) = w.make_release("v1", false, &[]);
        w.manifest("web", "v1", &url, &sha, "");
        w.commit("web v1");
        w.once(0);
        std::fs::write(w.path("srv/web/shared/CRASH"), "").unwrap();
        let manifest = w.path("work/apps/web.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace("shared: [.env]", "shared: [.env, CRASH]"),
        )
        .unwrap();
        w.commit("web v1 with a crashing shared file");
        abort_at(&w, &["once"], point);

        // Restarted: the rollback is finished, and state says what is on disk.
        w.once(1);
        w.assert_links_agree(point);
        assert_eq!(w.app_says().as_deref(), Some("v1"), "{point}");
        assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));

        // Fixed: the same layout deploys for real, with its link.
        std::fs::remove_file(w.path("srv/web/shared/CRASH")).unwrap();
        let out = w.hoist(&["retry", "web"]);
        assert!(out.status.success(), "{point}: {out:?}");
        assert!(
            std::fs::symlink_metadata(w.path("srv/web/releases/v1/CRASH"))
                .is_ok_and(|m| m.file_type().is_symlink()),
            "{point}: releases/v1 has its CRASH link"
        );
        w.assert_links_agree(point);
        assert_eq!(w.app_says().as_deref(), Some("v1"), "{point}");
    }
}

/// Waits until `pred`, polling; panics with the daemon's log on timeout.
fn wait(w: &World, what: &str, secs: u64, pred: impl FnMut() -> bool) {
    assert!(
        w.wait_for(Duration::from_secs(secs), pred),
        "timed out waiting for {what}\n{}",
        w.daemon_log()
    );
}

fn sigkill_daemon(w: &mut World) {
    let mut child = w.daemon.take().expect("a daemon");
    child.kill().unwrap(); // SIGKILL
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

#[test]
fn sigkill_of_the_daemon_mid_deploy_then_restart_converges() {
    let mut w = World::new();
    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    w.commit("web v1");
    w.start_daemon();
    wait(&w, "v1", 60, || w.app_says().as_deref() == Some("v1"));

    // 1. Killed while a before_activate hook runs (before the swap). The
    // hook blocks until the test lets it go, once.
    let gate = w.path("hook-gate");
    let hook = format!(
        "hooks:\n  before_activate: [[sh, -c, \"if [ ! -e {g}.done ]; then touch {g}.done; echo $$ > {g}.pid; exec sleep 60; fi\"]]\n",
        g = gate.display()
    );
    let (url2, sha2) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url2, &sha2, &hook);
    w.commit("web v2");
    let pidfile = w.path("hook-gate.pid");
    wait(&w, "the hook to start", 60, || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| !s.trim().is_empty())
    });
    sigkill_daemon(&mut w);
    let hook_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hook_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    let _ = w.state_json();

    // 2. Restarted, then killed again as soon as `current` has moved to v3
    // (after the swap, during reload or the health gate).
    let (url3, sha3) = w.make_release("v3", false, &[]);
    w.manifest("web", "v3", &url3, &sha3, "");
    let c3 = w.commit("web v3");
    w.start_daemon();
    wait(&w, "the swap to v3", 60, || {
        w.current_target("web").as_deref() == Some("releases/v3")
    });
    sigkill_daemon(&mut w);
    let st = w.status_json();
    let target = w.current_target("web").unwrap();
    assert!(
        target == "releases/v3" || target == "releases/v1",
        "{target}"
    );
    assert!(
        st["apps"]["web"]["release"] == "v1" || st["apps"]["web"]["release"] == "v3",
        "{st}"
    );

    // 3. Restarted for good: it converges on v3 and cleans up.
    w.start_daemon();
    wait(&w, "v3 recorded", 60, || {
        w.app_says().as_deref() == Some("v3")
            && w.status_json()["apps"]["web"]["release"] == "v3"
            && w.final_status(&c3).is_some_and(|s| s.0 == "success")
    });
    assert_eq!(w.stop_daemon(), Some(0));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v3"));
    assert!(w.leftovers("web").is_empty(), "{:?}", w.leftovers("web"));
    let st = w.status_json();
    assert!(st["apps"]["web"]["switching"].is_null(), "{st}");
    let procs = w.pm2_list();
    assert_eq!(procs.len(), 1, "{procs:?}");
}
