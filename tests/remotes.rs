//! Deploying through real remotes: the config repository over git smart
//! HTTP (the real `git http-backend`, behind a server that demands a token)
//! and over SSH (a real OpenSSH sshd with a deploy key and known_hosts),
//! artifacts from a real S3 server that checks SigV4 (s3s-fs), everything
//! over https with a CA made in the test, and statuses posted to each forge
//! shape. Each wrong credential must give one clear line, keep the daemon
//! up, change nothing on disk and show no secret.

mod common;

use common::World;
use common::forge::{FakeForge, Flavor};
use common::git_http::GitHttp;
use common::s3::{ACCESS_KEY, S3, SECRET_KEY};
use common::serve::TestCa;
use common::sshd::Sshd;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "ghp_hoistTestToken0123456789abcdef";
const WRONG_TOKEN: &str = "ghp_wrongTokenfedcba9876543210";

/// Writes a secret file as an operator should: readable by its owner only
/// (hoist warns about secret files others can read).
fn write(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The world's v1 release and manifest, committed; returns the commit.
fn commit_v1(w: &World) -> String {
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1")
}

/// Starts `hoist run` and waits until its log shows `needle` twice (two
/// polls refused). Then: the daemon still runs, nothing was deployed, no
/// secret is in the log, and every line that names the failure is one
/// complete log line. Stops the daemon, which must exit 0.
fn daemon_refuses(w: &mut World, needle: &str, secrets: &[&str]) -> String {
    w.start_daemon();
    let seen = w.wait_for(Duration::from_secs(30), || {
        w.daemon_log().matches(needle).count() >= 2
    });
    let log = w.daemon_log();
    assert!(seen, "no refusal with {needle:?} in the log:\n{log}");
    assert!(
        w.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon stopped:\n{log}"
    );
    for s in secrets {
        assert!(!log.contains(s), "a secret is in the log:\n{log}");
    }
    for line in log.lines().filter(|l| l.contains(needle)) {
        assert!(
            ["INFO", "WARN", "ERROR"]
                .iter()
                .any(|level| line.contains(level)),
            "not a log record of its own: {line}"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.starts_with(' ') || l.starts_with("Caused by")),
        "a multi-line error in the log:\n{log}"
    );
    assert_eq!(w.current_target("web"), None, "something was deployed");
    assert!(w.pm2_list().is_empty(), "processes were started");
    assert_eq!(w.stop_daemon(), Some(0), "{}", w.daemon_log());
    log
}

/// The one line `hoist once` printed about a failure (stderr).
fn once_error(w: &World, expect: i32) -> String {
    let out = w.hoist(&["once"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(expect), "{stderr}");
    eprintln!("hoist once said: {}", stderr.trim());
    stderr
}

/// Points the world's repository at `url`, with `token` in repo.token_file.
fn use_token(w: &mut World, url: String, token: &str) {
    write(&w.path("git-token"), token);
    w.repo_url = Some(url);
    w.repo_extra = format!("  token_file: {}\n", w.path("git-token").display());
}

#[test]
fn git_over_http_with_a_token_fetches_only_what_is_new() {
    let mut w = World::new();
    let git = GitHttp::start(w.dir.path(), Some(TOKEN), None);
    use_token(&mut w, git.url("config.git"), &format!("{TOKEN}\n"));

    // Plain http is refused before any connection, unless allowed.
    w.write_config();
    let err = once_error(&w, 2);
    assert!(err.contains("allow_http"), "{err}");
    assert!(git.requests().is_empty());
    w.extra_config = "allow_http: true\n".into();
    w.write_config();

    // A first commit with 400 KiB of incompressible history.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..400 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(w.path("work/noise.bin"), &noise).unwrap();
    let c1 = commit_v1(&w);
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c1).unwrap().0, "success");
    let first: usize = git
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.bytes)
        .sum();
    assert!(first > 400 * 1024, "the first fetch brought {first} bytes");

    // Nothing moved: one ref advertisement, no pack.
    git.clear();
    w.once(0);
    let reqs = git.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
    assert!(
        reqs.iter()
            .any(|r| r.status == 200 && r.target.ends_with("info/refs?service=git-upload-pack")),
        "{reqs:?}"
    );

    // A new commit: only it comes over the wire.
    git.clear();
    let (url, sha) = w.make_release("v2", true, &[]);
    w.manifest("web", "v2", &url, &sha, "");
    let c2 = w.commit("web v2");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
    let second: usize = git
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.bytes)
        .sum();
    assert!(
        second > 0 && second < 16 * 1024,
        "the second fetch brought {second} bytes"
    );

    // No token configured: the server's demand is answered with a clear line.
    w.repo_extra = String::new();
    w.write_config();
    let err = once_error(&w, 1);
    assert!(err.contains("repo.token_file is not set"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn git_over_http_with_a_wrong_token_changes_nothing_until_it_is_fixed() {
    let mut w = World::new();
    let git = GitHttp::start(w.dir.path(), Some(TOKEN), None);
    use_token(&mut w, git.url("config.git"), WRONG_TOKEN);
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    commit_v1(&w);

    let log = daemon_refuses(
        &mut w,
        "did not accept the token in repo.token_file",
        &[TOKEN, WRONG_TOKEN],
    );
    assert!(
        log.contains("127.0.0.1"),
        "the error names the repository: {log}"
    );
    assert!(!w.path("state/repo.git/refs/remotes/origin/main").exists());

    // Fixing the file is enough: the token is read at every poll.
    write(&w.path("git-token"), TOKEN);
    w.start_daemon();
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );
    assert_eq!(w.stop_daemon(), Some(0));
    assert!(!w.daemon_log().contains(TOKEN));
}

#[test]
fn the_token_never_follows_a_redirect_to_another_host() {
    let mut w = World::new();
    let git = GitHttp::start(w.dir.path(), Some(TOKEN), None);
    use_token(&mut w, git.url("elsewhere/config.git"), TOKEN);
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    commit_v1(&w);
    let err = once_error(&w, 1);
    assert!(
        err.contains("localhost asks for credentials, and hoist gives them only to 127.0.0.1"),
        "{err}"
    );
    let reqs = git.requests();
    assert!(
        reqs.iter().any(|r| r.host.starts_with("localhost:")),
        "{reqs:?}"
    );
    assert!(reqs.iter().all(|r| !r.authorization), "{reqs:?}");
    assert!(!w.path("srv/web").exists());
}

#[test]
fn public_repository_over_http_needs_no_token() {
    let w = World::new();
    let git = GitHttp::start(w.dir.path(), None, None);
    let mut w = w;
    w.repo_url = Some(git.url("config.git"));
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "paused: true\n");
    let c = w.commit("web v1, paused");
    w.once(0);
    assert_eq!(w.final_status(&c).unwrap().0, "success");
    assert!(git.requests().iter().all(|r| r.status == 200));
}

fn ssh_world(sshd: &Sshd, key: &Path, known_hosts: &Path) -> World {
    let mut w = World::new();
    w.repo_url = Some(sshd.url(&w.path("config.git")));
    w.repo_extra = format!(
        "  ssh_key_file: {}\n  known_hosts_file: {}\n",
        key.display(),
        known_hosts.display()
    );
    w.write_config();
    w
}

#[test]
fn git_over_ssh_with_a_deploy_key_and_known_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    // known_hosts as operators make it: ssh-keyscan, with hashed names.
    let scan = std::process::Command::new("ssh-keyscan")
        .args([
            "-H",
            "-t",
            "ed25519",
            "-p",
            &sshd.port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("ssh-keyscan runs");
    let scanned = String::from_utf8_lossy(&scan.stdout).into_owned();
    assert!(scanned.starts_with("|1|"), "{scanned}");
    let known_hosts = tmp.path().join("known_hosts_scanned");
    write(&known_hosts, &scanned);
    let w = ssh_world(&sshd, &sshd.deploy_key, &known_hosts);
    let c1 = commit_v1(&w);
    let out = w.hoist(&["once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsshd:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c1).unwrap().0, "success");

    let (url, sha) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url, &sha, "");
    let c2 = w.commit("web v2");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
}

#[test]
fn ssh_refuses_changed_and_unknown_host_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&tmp.path().join("sshd"));

    let w = ssh_world(&sshd, &sshd.deploy_key, &sshd.known_hosts_changed);
    commit_v1(&w);
    let err = once_error(&w, 1);
    assert!(err.contains("has changed"), "{err}");
    assert!(err.contains(&format!("[127.0.0.1]:{}", sshd.port)), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!w.path("srv/web").exists());

    let empty = tmp.path().join("known_hosts_empty");
    write(&empty, "# nobody yet\n");
    let w = ssh_world(&sshd, &sshd.deploy_key, &empty);
    commit_v1(&w);
    let err = once_error(&w, 1);
    assert!(err.contains("is not in known_hosts_file"), "{err}");
    assert!(
        err.contains(&format!("ssh-keyscan -p {} 127.0.0.1", sshd.port)),
        "{err}"
    );
    assert!(!w.path("srv/web").exists());
    // The key was never offered to a server hoist does not trust.
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn ssh_with_a_key_the_server_does_not_know_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&tmp.path().join("sshd"));
    let mut w = ssh_world(&sshd, &sshd.stranger_key, &sshd.known_hosts);
    commit_v1(&w);
    let key = std::fs::read_to_string(&sshd.stranger_key).unwrap();
    let secret_line = key.lines().nth(1).unwrap().to_string();
    let log = daemon_refuses(
        &mut w,
        "did not accept the key in repo.ssh_key_file",
        &[&secret_line],
    );
    assert!(log.contains(&format!("127.0.0.1:{}", sshd.port)), "{log}");
}

fn s3_world(s3: &S3, secret: &str, ca: Option<&Path>) -> World {
    let mut w = World::new();
    write(&w.path("s3-key-id"), ACCESS_KEY);
    write(&w.path("s3-secret"), &format!("{secret}\n"));
    let mut extra = format!(
        "storage:\n  s3:\n    endpoint: {}\n    region: eu-west-1\n    access_key_id_file: {}\n    secret_access_key_file: {}\n",
        s3.endpoint(),
        w.path("s3-key-id").display(),
        w.path("s3-secret").display()
    );
    match ca {
        Some(ca) => extra.push_str(&format!("ca_file: {}\n", ca.display())),
        None => extra.push_str("allow_http: true\n"),
    }
    w.extra_config = extra;
    w.write_config();
    w
}

/// Packs a release and puts it into the bucket; returns (s3 url, sha256).
fn s3_release(w: &World, s3: &S3, version: &str) -> (String, String) {
    let (file_url, sha) = w.make_release(version, true, &[]);
    let file = file_url.trim_start_matches("file://");
    (
        s3.put_file(
            "releases",
            &format!("web/web-{version}.tar.zst"),
            Path::new(file),
        ),
        sha,
    )
}

#[test]
fn s3_with_sigv4_from_files_and_from_aws_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"), None);
    let mut w = s3_world(&s3, SECRET_KEY, None);
    let (url, sha) = s3_release(&w, &s3, "v1");
    w.manifest("web", "v1", &url, &sha, "");
    let c1 = w.commit("web v1 from s3");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.final_status(&c1).unwrap().0, "success");

    // The same store, credentials from AWS_* variables instead of files.
    w.extra_config = format!(
        "storage:\n  s3:\n    endpoint: {}\n    region: eu-west-1\nallow_http: true\n",
        s3.endpoint()
    );
    w.write_config();
    let (url, sha) = s3_release(&w, &s3, "v2");
    w.manifest("web", "v2", &url, &sha, "");
    let c2 = w.commit("web v2 from s3");
    let out = w.hoist_env(
        &["once"],
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
}

#[test]
fn s3_with_a_wrong_secret_names_bucket_and_key_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(&tmp.path().join("s3"), None);
    let wrong = "not-the-secret-5d2a8e";
    let mut w = s3_world(&s3, wrong, None);
    let (url, sha) = s3_release(&w, &s3, "v1");
    w.manifest("web", "v1", &url, &sha, "");
    let c = w.commit("web v1 from s3");
    let log = daemon_refuses(
        &mut w,
        "s3://releases/web/web-v1.tar.zst",
        &[wrong, SECRET_KEY],
    );
    let line = log
        .lines()
        .find(|l| l.contains("s3://releases/web/web-v1.tar.zst"))
        .unwrap();
    assert!(line.contains("denied"), "{line}");
    assert!(
        !line.contains("<?xml") && !line.contains("<Error>"),
        "a dump: {line}"
    );
    assert!(line.len() < 400, "too long for one line: {line}");
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error");
    assert!(desc.contains("s3://releases/web/web-v1.tar.zst"), "{desc}");
    let cache = std::fs::read_dir(w.path("state/cache"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(cache, 0, "nothing may be left in the artifact cache");

    // A credentials problem is not held against the commit: with the right
    // secret (read at start and on SIGHUP), the same commit deploys.
    write(&w.path("s3-secret"), SECRET_KEY);
    w.start_daemon();
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );
    assert_eq!(w.stop_daemon(), Some(0));
    assert_eq!(w.final_status(&c).unwrap().0, "success");
}

#[test]
fn https_everywhere_with_a_private_ca() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let ca_file = tmp.path().join("ca.pem");
    write(&ca_file, &ca.ca_pem);
    let s3 = S3::start(&tmp.path().join("s3"), Some(&ca));
    let mut w = s3_world(&s3, SECRET_KEY, Some(&ca_file));
    let git = GitHttp::start(w.dir.path(), Some(TOKEN), Some(&ca));
    let forge = FakeForge::start(Flavor::Gitea, "forge-token-3e9b7c", Some(&ca));
    write(&w.path("forge-token"), "forge-token-3e9b7c");
    use_token(&mut w, git.url("config.git"), TOKEN);
    w.status_config = Some(forge.status_config(&w.path("forge-token")));
    w.write_config();

    // v1 from an https URL on the same private-CA server, v2 from S3 over https.
    w.make_release("v1", true, &[]);
    let v1_url = format!("{}/files/store/web-v1.tar.zst", git.server.base_url());
    let sha1 = hoist_sha256(&w.path("store/web-v1.tar.zst"));
    w.manifest("web", "v1", &v1_url, &sha1, "");
    let c1 = w.commit("web v1 over https");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(forge.final_state(&c1).as_deref(), Some("success"));

    let (url, sha) = s3_release(&w, &s3, "v2");
    w.manifest("web", "v2", &url, &sha, "");
    let c2 = w.commit("web v2 from s3 over https");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v2"));
    assert_eq!(forge.final_state(&c2).as_deref(), Some("success"));

    // Without the CA, the same server is refused with a hint.
    w.extra_config = w
        .extra_config
        .replace(&format!("ca_file: {}\n", ca_file.display()), "");
    w.write_config();
    let (url, sha) = s3_release(&w, &s3, "v3");
    w.manifest("web", "v3", &url, &sha, "");
    w.commit("web v3");
    let err = once_error(&w, 1);
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("ca_file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
}

fn hoist_sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn statuses_reach_github_gitea_and_gitlab() {
    let mut w = World::new();
    w.extra_config = "allow_http: true\n".into();
    let mut version = 0;
    for flavor in [Flavor::Github, Flavor::Gitea, Flavor::Gitlab] {
        version += 1;
        let token = format!("{}-token-{version}a7f", flavor.provider());
        let forge = FakeForge::start(flavor, &token, None);
        write(&w.path("forge-token"), &token);
        w.status_config = Some(forge.status_config(&w.path("forge-token")));
        w.write_config();
        let v = format!("v{version}");
        let (url, sha) = w.make_release(&v, true, &[]);
        w.manifest("web", &v, &url, &sha, "");
        let c = w.commit(&format!("web {v}"));
        w.once(0);
        assert_eq!(w.app_says().as_deref(), Some(v.as_str()));
        let accepted = forge.accepted();
        let states: Vec<&str> = accepted
            .iter()
            .filter(|a| a.sha == c)
            .map(|a| a.state.as_str())
            .collect();
        // `pending` may be superseded before it is sent; `success` must land.
        assert_eq!(
            states.last(),
            Some(&"success"),
            "{flavor:?}: {:?}",
            forge.attempts()
        );
        assert!(
            states.iter().all(|s| ["pending", "success"].contains(s)),
            "{flavor:?}: {states:?}"
        );
        assert!(
            accepted.iter().all(|a| a.context == "hoist/test/web-1"),
            "{accepted:?}"
        );
        assert!(
            accepted.iter().any(|a| a.description.contains(&v)),
            "{flavor:?}: {accepted:?}"
        );
        assert!(
            forge.attempts().iter().all(|(code, _)| *code == 201),
            "{:?}",
            forge.attempts()
        );
    }
}

#[test]
fn a_wrong_forge_token_never_blocks_a_deploy_nor_leaks() {
    let mut w = World::new();
    let forge = FakeForge::start(Flavor::Gitlab, "the-right-token-77c1", None);
    write(&w.path("forge-token"), "a-wrong-token-0b3f");
    w.status_config = Some(forge.status_config(&w.path("forge-token")));
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    commit_v1(&w);
    w.start_daemon();
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")),
        "{}",
        w.daemon_log()
    );
    assert!(
        w.wait_for(Duration::from_secs(20), || w.daemon_log().contains("401")),
        "{}",
        w.daemon_log()
    );
    assert!(w.daemon.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_eq!(w.stop_daemon(), Some(0));
    let log = w.daemon_log();
    assert!(
        !log.contains("a-wrong-token-0b3f") && !log.contains("the-right-token-77c1"),
        "{log}"
    );
    assert!(forge.accepted().is_empty());
    assert!(forge.attempts().iter().all(|(code, _)| *code == 401));
}

#[test]
fn plain_http_is_refused_everywhere_unless_allowed() {
    let mut w = World::new();
    // Each http:// endpoint in the host config is a config error (exit 2)
    // naming the key, before anything is contacted.
    let s3 = "storage:\n  s3:\n    endpoint: http://127.0.0.1:9/\n";
    let forge =
        "status:\n  provider: gitea\n  api_url: http://127.0.0.1:9/\n  repository: acme/deploy\n";
    for (extra, status, key) in [
        (s3, None, "storage.s3.endpoint"),
        ("", Some(forge), "status.api_url"),
    ] {
        w.extra_config = extra.into();
        w.status_config = status.map(str::to_string);
        w.write_config();
        let err = once_error(&w, 2);
        assert!(err.contains(key) && err.contains("allow_http"), "{err}");
    }
    w.extra_config = String::new();
    w.status_config = None;
    w.write_config();

    // An http:// artifact is refused when fetched: status error, nothing on disk.
    let server = GitHttp::start(w.dir.path(), None, None);
    w.make_release("v1", true, &[]);
    let url = format!("{}/files/store/web-v1.tar.zst", server.server.base_url());
    let sha = hoist_sha256(&w.path("store/web-v1.tar.zst"));
    w.manifest("web", "v1", &url, &sha, "");
    let c = w.commit("web v1 over plain http");
    w.once(1);
    let (state, desc) = w.final_status(&c).unwrap();
    assert_eq!(state, "error");
    assert!(desc.contains("allow_http"), "{desc}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert_eq!(w.current_target("web"), None);
}
