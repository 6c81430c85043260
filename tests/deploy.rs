//! The deploy pipeline end to end on one server: real git repositories, the
//! real `hoist` binary, real pm2 running a real Node.js app. Each test is
//! one of SPEC §3's promises.

mod common;

use common::World;
use std::time::Duration;

#[test]
fn deploy_update_and_revert_without_downloading_again() {
    let w = World::new();
    std::fs::create_dir_all(w.path("srv/web/shared")).unwrap();
    std::fs::write(w.path("srv/web/shared/.env"), "SECRET=shared-1\n").unwrap();

    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    let c1 = w.commit("web v1");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c1).unwrap().0, "success");
    // current is a relative link into releases/, and shared files are linked.
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    assert_eq!(
        common::http_get(w.app_port, "/env").unwrap().1,
        "SECRET=shared-1"
    );
    // pm2 runs the app with cwd through the `current` link, never a release path.
    let procs = w.pm2_list();
    let cwd = procs[0]["pm2_env"]["pm_cwd"].as_str().unwrap().to_string();
    assert!(cwd.trim_end_matches('/').ends_with("/web/current"), "{cwd}");

    let (url2, sha2) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url2, &sha2, "");
    let c2 = w.commit("web v2");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
    assert_eq!(w.releases_on_disk("web"), vec!["v1", "v2"]);

    // Revert with the v1 tarball gone from the store: it can only work
    // without a download.
    std::fs::remove_file(url1.trim_start_matches("file://")).unwrap();
    let c3 = w.revert_head();
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    assert_eq!(w.final_status(&c3).unwrap().0, "success");

    // Nothing moved: a second pass does nothing and posts nothing new.
    let before = w.statuses().len();
    let deploys_before = w.history().len();
    w.once(0);
    assert_eq!(w.statuses().len(), before);
    assert_eq!(w.history().len(), deploys_before);

    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["release"], "v1");
    assert_eq!(st["apps"]["web"]["previous"], "v2");
    assert_eq!(st["apps"]["web"]["commit"], c3.as_str());
}

#[test]
fn an_unhealthy_release_is_rolled_back_and_not_retried() {
    let w = World::new();
    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    w.commit("web v1");
    w.once(0);

    let (url2, sha2) = w.make_release("v2-sick", false, &["UNHEALTHY"]);
    w.manifest("web", "v2-sick", &url2, &sha2, "");
    let c2 = w.commit("web v2 (answers 500)");
    let out = w.once(1);
    assert!(out.contains("rolled back to v1"), "{out}");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "failure");
    assert!(desc.contains("500"), "{desc}");

    // The same commit is not tried again on the next pass.
    let events = w.history().len();
    w.once(1);
    assert_eq!(w.history().len(), events, "no new deploy attempt");

    // `hoist retry` tries it again (and it fails again, back on v1).
    let out = w.hoist(&["retry", "web"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.history().iter().any(|e| e["event"] == "retry"));
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // Moving the branch to a fixed release deploys it.
    let (url3, sha3) = w.make_release("v3", false, &[]);
    w.manifest("web", "v3", &url3, &sha3, "");
    w.commit("web v3");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v3"));
}

#[test]
fn a_crash_looping_release_is_rolled_back() {
    let w = World::new();
    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    w.commit("web v1");
    w.once(0);

    let (url2, sha2) = w.make_release("v2-crash", true, &["CRASH"]);
    w.manifest("web", "v2-crash", &url2, &sha2, "");
    let c2 = w.commit("web v2 (crashes)");
    w.once(1);
    assert_eq!(w.final_status(&c2).unwrap().0, "failure");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    let procs = w.pm2_list();
    assert!(
        procs.iter().all(|p| p["pm2_env"]["status"] == "online"),
        "{procs:?}"
    );
    let st = w.status_json();
    assert_eq!(st["apps"]["web"]["release"], "v1");
    assert_eq!(st["apps"]["web"]["failed"]["release"], "v2-crash");
}

#[test]
fn a_failed_first_deploy_leaves_nothing_running() {
    let w = World::new();
    let (url, sha) = w.make_release("v1-crash", false, &["CRASH"]);
    w.manifest("web", "v1-crash", &url, &sha, "");
    let c = w.commit("web crashes from the start");
    w.once(1);
    assert_eq!(w.final_status(&c).unwrap().0, "failure");
    assert_eq!(w.current_target("web"), None);
    assert!(w.pm2_list().iter().all(|p| p["name"] != "web"));
}

#[test]
fn pruning_keeps_current_and_previous() {
    let mut w = World::new();
    w.keep_releases = 1;
    w.write_config();
    let mut rel = Vec::new();
    for v in ["v1", "v2", "v3"] {
        let (url, sha) = w.make_release(v, true, &[]);
        w.manifest("web", v, &url, &sha, "");
        w.commit(v);
        w.once(0);
        rel.push((url, sha));
    }
    // keep_releases 1 still keeps the previous release for rollback.
    assert_eq!(w.releases_on_disk("web"), vec!["v2", "v3"]);
    // Back to v1 (downloaded again: it was pruned). Now v1 is current and v3
    // previous, although v2 is newer than v1.
    w.manifest("web", "v1", &rel[0].0, &rel[0].1, "");
    w.commit("back to v1");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.releases_on_disk("web"), vec!["v1", "v3"]);
    // The artifact cache only holds what the kept releases need.
    let cached: Vec<_> = std::fs::read_dir(w.path("state/cache"))
        .unwrap()
        .flatten()
        .collect();
    assert!(cached.len() <= 2, "{cached:?}");
}

#[test]
fn a_second_hoist_on_the_same_state_dir_exits_3() {
    let mut w = World::new();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.start_daemon();
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );
    let out = w.hoist(&["once"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lock"), "{err}");
    // SIGTERM stops the daemon with 0 and leaves the app running; then the
    // lock is free again.
    assert_eq!(w.stop_daemon(), Some(0));
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    w.once(0);
}

#[test]
fn an_invalid_manifest_changes_nothing() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.once(0);
    let (url2, sha2) = w.make_release("v2", false, &[]);
    // A valid change to web and an invalid second manifest in one commit.
    w.manifest("web", "v2", &url2, &sha2, "");
    w.manifest("api", "v2", &url2, &sha2, "no_such_key: true\n");
    let c = w.commit("web v2 plus a broken api");
    w.once(1);
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error");
    assert!(
        desc.contains("apps/api.yaml") && desc.contains("no_such_key"),
        "{desc}"
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.releases_on_disk("web"), vec!["v1"]);
}

#[test]
fn a_checksum_mismatch_is_refused_and_leaves_nothing_behind() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.once(0);
    let (url2, _) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url2, &"deadbeef".repeat(8), "");
    let c = w.commit("wrong checksum");
    w.once(1);
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error");
    assert!(
        desc.contains("sha256") || desc.contains("checksum"),
        "{desc}"
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.releases_on_disk("web"), vec!["v1"]);
    assert!(w.leftovers("web").is_empty(), "{:?}", w.leftovers("web"));
    // The bad bytes are not fetched again at every poll, and the commit's
    // status does not flip.
    let statuses = w.statuses().len();
    let events = w.history().len();
    w.once(1);
    assert_eq!(w.statuses().len(), statuses);
    assert_eq!(w.history().len(), events);
}

#[test]
fn targets_paused_and_apps_that_leave() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    // An app for other hosts only: never deployed here.
    std::fs::write(
        w.path("work/apps/db.yaml"),
        format!("release: v1\nartifact:\n  url: {url}\n  sha256: {sha}\ntargets:\n  hosts: [\"db-*\"]\npm2:\n  - name: db\n    script: server.js\n"),
    )
    .unwrap();
    w.commit("web v1, db elsewhere");
    w.once(0);
    assert!(!w.path("srv/db").exists());
    assert!(w.pm2_list().iter().all(|p| p["name"] != "db"));

    // Paused: a new release in the manifest is not applied.
    let (url2, sha2) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url2, &sha2, "paused: true\n");
    let c = w.commit("web v2 but paused");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c).unwrap().0, "success");

    // The app leaves the repo: its processes go, its files stay.
    std::fs::remove_file(w.path("work/apps/web.yaml")).unwrap();
    w.commit("web leaves");
    w.once(0);
    assert!(w.pm2_list().iter().all(|p| p["name"] != "web"));
    assert_eq!(w.app_says(), None);
    assert!(w.path("srv/web/releases/v1").is_dir());
    assert!(w.history().iter().any(|e| e["event"] == "remove"));
}

#[test]
fn local_rollback_holds_until_the_branch_changes_the_app() {
    let w = World::new();
    for v in ["v1", "v2"] {
        let (url, sha) = w.make_release(v, false, &[]);
        w.manifest("web", v, &url, &sha, "");
        w.commit(v);
        w.once(0);
    }
    let out = w.hoist(&["rollback", "web"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    // An unrelated commit does not undo the operator's rollback.
    w.commit("unrelated");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    // A new release for the app ends the hold.
    let (url, sha) = w.make_release("v3", false, &[]);
    w.manifest("web", "v3", &url, &sha, "");
    w.commit("v3");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v3"));
    // Rolling back to something not kept is a clear error.
    let out = w.hoist(&["rollback", "web", "--to", "v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("v9"));
}

#[test]
fn plan_says_what_and_why_without_doing_it() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    let out = w.hoist(&["plan", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["apps"][0]["app"], "web");
    assert_eq!(plan["apps"][0]["action"], "deploy");
    assert!(
        plan["apps"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("first deploy")
    );
    // Nothing was done.
    assert!(!w.path("srv/web/current").exists());
    assert!(w.statuses().is_empty());
    w.once(0);
    let out = w.hoist(&["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web: unchanged, v1 runs"), "{text}");
    let out = w.hoist(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("web: v1") && text.contains("healthy"),
        "{text}"
    );
}

#[test]
fn one_status_per_app_when_the_context_names_the_app() {
    let mut w = World::new();
    w.extra_config = String::new();
    w.write_config();
    // Rewrite the status section with an {app} context.
    let cfg = std::fs::read_to_string(w.config_path()).unwrap().replace(
        "  provider: file\n",
        "  provider: file\n  context: \"deploy/{environment}/{app}@{host}\"\n",
    );
    std::fs::write(w.config_path(), cfg).unwrap();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    std::fs::write(
        w.path("work/apps/api.yaml"),
        format!("release: v1\nartifact:\n  url: {url}\n  sha256: {sha}\npaused: true\npm2:\n  - name: api\n    script: server.js\n"),
    )
    .unwrap();
    let c = w.commit("web and a paused api");
    w.once(0);
    let mine: Vec<_> = w.statuses().into_iter().filter(|s| s.0 == c).collect();
    let finals: std::collections::BTreeMap<String, String> =
        mine.iter().map(|s| (s.2.clone(), s.1.clone())).collect();
    assert_eq!(
        finals.get("deploy/test/web@web-1").map(String::as_str),
        Some("success"),
        "{mine:?}"
    );
    assert_eq!(
        finals.get("deploy/test/api@web-1").map(String::as_str),
        Some("success"),
        "{mine:?}"
    );
    assert_eq!(finals.len(), 2, "{mine:?}");
}

/// A manifest for `app` on its own port, with a short health gate.
fn manifest_on(w: &World, app: &str, port: u16, release: &str, (url, sha): &(String, String)) {
    let text = format!(
        "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\npm2:\n  - name: {app}\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 6s\n  stable_for: 1s\n"
    );
    std::fs::write(w.path(&format!("work/apps/{app}.yaml")), text).unwrap();
}

#[test]
fn one_app_failing_its_gate_rolls_back_alone() {
    let w = World::new();
    let apps = ["api", "jobs", "web"];
    let ports: Vec<u16> = apps.iter().map(|_| common::free_port()).collect();
    let v1 = w.make_release("v1", true, &[]);
    for (app, port) in apps.iter().zip(&ports) {
        manifest_on(&w, app, *port, "v1", &v1);
    }
    w.commit("three apps on v1");
    w.once(0);

    let v2 = w.make_release("v2", true, &[]);
    let sick = w.make_release("v2-sick", true, &["UNHEALTHY"]);
    manifest_on(&w, "api", ports[0], "v2", &v2);
    manifest_on(&w, "jobs", ports[1], "v2", &v2);
    manifest_on(&w, "web", ports[2], "v2-sick", &sick);
    let c2 = w.commit("v2, web unhealthy");
    w.once(1);

    let says = |port: u16| common::http_get(port, "/").map(|(_, b)| b);
    assert_eq!(says(ports[0]).as_deref(), Some("v2"));
    assert_eq!(says(ports[1]).as_deref(), Some("v2"));
    assert_eq!(says(ports[2]).as_deref(), Some("v1"));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    let st = w.status_json();
    assert_eq!(st["apps"]["api"]["release"], "v2");
    assert_eq!(st["apps"]["web"]["release"], "v1");
    assert_eq!(st["apps"]["web"]["failed"]["release"], "v2-sick");
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "failure");
    assert!(desc.contains("web v2-sick failed"), "{desc}");
    assert!(desc.contains("rolled back to v1"), "{desc}");
    assert!(desc.contains("api v2 live"), "{desc}");
    assert!(desc.contains("jobs v2"), "{desc}");
}

#[test]
fn a_running_release_with_new_shared_paths_is_not_touched_before_the_swap() {
    let w = World::new();
    let v1 = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &v1.0, &v1.1, "");
    w.commit("web v1");
    w.once(0);
    let live = w.path("srv/web/releases/v1");
    let listing = |p: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(&live);

    // Same release, one more shared path. The hook runs just before the
    // swap and records what the running directory looks like then.
    let seen = w.path("seen-by-hook");
    w.manifest(
        "web",
        "v1",
        &v1.0,
        &v1.1,
        &format!(
            "hooks:\n  before_activate: [[sh, -c, \"ls -A {} > {}\"]]\n",
            w.path("srv/web/current").display(),
            seen.display()
        ),
    );
    let text = std::fs::read_to_string(w.path("work/apps/web.yaml"))
        .unwrap()
        .replace("shared: [.env]", "shared: [.env, uploads/]");
    std::fs::write(w.path("work/apps/web.yaml"), text).unwrap();
    let c2 = w.commit("web v1 with uploads/");
    w.once(0);

    let mut at_hook: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    at_hook.sort();
    assert_eq!(
        at_hook, before,
        "the running directory changed before the swap"
    );
    assert!(w.path("srv/web/current/uploads").is_symlink());
    assert!(w.path("srv/web/shared/uploads").is_dir());
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
    assert!(w.leftovers("web").is_empty(), "{:?}", w.leftovers("web"));
}
