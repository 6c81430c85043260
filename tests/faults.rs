//! Faults of the network around a server, and secrets under those faults.
//!
//! The object store and git server here are small scripted HTTP servers on
//! 127.0.0.1 (answering 5xx, 429, cutting bodies short, announcing wrong
//! lengths), or the real file:// config repo moved away while the daemon
//! runs. Each test checks that nothing is half-activated, that a passing
//! fault is tried again (bounded, with backoff) and heals by itself, and
//! that the daemon stays up and says what is wrong on /healthz.

mod common;

use common::World;
use sha2::Digest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the scripted server answers one request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// The body, whole.
    Ok,
    /// A bare status with a short body.
    Status(u16),
    /// Announces the whole length, sends half, closes.
    Truncated,
    /// Announces fewer bytes than the body has (sends only those).
    ShortLength,
}

/// One request as the server saw it: the request line and headers, and the body.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: String,
}

struct Server {
    port: u16,
    script: Arc<Mutex<Vec<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `body` for every path; answers follow `script` in order, then `Ok`.
    fn start(body: Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let script: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s2, seen2) = (script.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let answer = {
                    let mut s = s2.lock().unwrap();
                    if s.is_empty() {
                        Answer::Ok
                    } else {
                        s.remove(0)
                    }
                };
                let (body, seen) = (body.clone(), seen2.clone());
                std::thread::spawn(move || serve(conn, &body, answer, &seen));
            }
        });
        Server { port, script, seen }
    }

    fn script(&self, answers: &[Answer]) {
        *self.script.lock().unwrap() = answers.to_vec();
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn serve(mut conn: TcpStream, body: &[u8], answer: Answer, seen: &Mutex<Vec<Seen>>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut req_body = vec![0; length];
    let _ = reader.read_exact(&mut req_body);
    seen.lock().unwrap().push(Seen {
        head,
        body: String::from_utf8_lossy(&req_body).into_owned(),
    });
    let ok = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match answer {
        Answer::Ok => conn
            .write_all(ok(body.len()).as_bytes())
            .and_then(|_| conn.write_all(body)),
        Answer::Status(code) => conn.write_all(
            format!(
                "HTTP/1.1 {code} Oops\r\nContent-Length: 4\r\nRetry-After: 0\r\nWWW-Authenticate: Basic realm=\"git\"\r\nConnection: close\r\n\r\noops"
            )
            .as_bytes(),
        ),
        Answer::Truncated => conn
            .write_all(ok(body.len()).as_bytes())
            .and_then(|_| conn.write_all(&body[..body.len() / 2])),
        Answer::ShortLength => conn
            .write_all(ok(body.len() - 100).as_bytes())
            .and_then(|_| conn.write_all(&body[..body.len() - 100])),
    };
    let _ = conn.flush();
}

/// Replaces one line of the world's host config.
fn edit_config(w: &World, from: &str, to: &str) {
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(w.config_path(), text.replace(from, to)).unwrap();
}

/// A world with web live on v1 (from file://) and `allow_http: true`.
fn live_world() -> World {
    let mut w = World::new();
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.once(0);
    w
}

fn assert_still_v1(w: &World) {
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(w.current_target("web").as_deref(), Some("releases/v1"));
    assert_eq!(w.releases_on_disk("web"), vec!["v1"]);
    assert!(w.leftovers("web").is_empty(), "{:?}", w.leftovers("web"));
    let st = w.status_json();
    assert!(st["apps"]["web"]["switching"].is_null(), "{st}");
}

#[test]
fn object_store_faults_are_retried_with_backoff_and_nothing_is_half_activated() {
    let w = live_world();
    let (file_url, sha) = w.make_release("v2", true, &[]);
    let body = std::fs::read(file_url.trim_start_matches("file://")).unwrap();
    let store = Server::start(body);
    w.manifest("web", "v2", &store.url("web-v2.tar.zst"), &sha, "");
    let c2 = w.commit("web v2 over http");

    // Down for longer than one deploy's attempts: 3 tries, then the commit
    // stays pending and the app on v1.
    store.script(&[
        Answer::Status(503),
        Answer::Status(429),
        Answer::Truncated,
        Answer::Status(502),
    ]);
    let t0 = std::time::Instant::now();
    let out = w.once(1);
    assert_eq!(store.requests(), 3, "{out}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "no backoff between attempts"
    );
    assert_eq!(w.final_status(&c2).unwrap().0, "pending", "{out}");
    assert!(out.contains("will retry"), "{out}");
    assert_still_v1(&w);
    assert!(w.status_json()["apps"]["web"]["failed"].is_null());
    assert!(std::fs::read_dir(w.path("state/cache")).unwrap().all(|e| {
        let n = e.unwrap().file_name();
        n.to_string_lossy() != sha
    }));

    // The next poll: one more 502, then the store is back.
    w.once(0);
    assert_eq!(store.requests(), 5);
    assert_eq!(w.final_status(&c2).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
}

#[test]
fn a_wrong_length_is_a_checksum_error_not_a_deploy() {
    let w = live_world();
    let (file_url, sha) = w.make_release("v2", true, &[]);
    let body = std::fs::read(file_url.trim_start_matches("file://")).unwrap();
    let store = Server::start(body);
    store.script(&[Answer::ShortLength]);
    w.manifest("web", "v2", &store.url("web-v2.tar.zst"), &sha, "");
    let c2 = w.commit("web v2, served short");
    w.once(1);
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.contains("sha256"), "{desc}");
    assert_still_v1(&w);
    // Not downloaded again for the same commit.
    w.once(1);
    assert_eq!(store.requests(), 1);
}

#[test]
fn a_git_server_answering_5xx_changes_nothing() {
    let w = live_world();
    let git = Server::start(Vec::new());
    git.script(&[Answer::Status(503); 50]);
    edit_config(
        &w,
        &format!("file://{}/config.git", w.dir.path().display()),
        &git.url("acme/deploy.git"),
    );
    let out = w.hoist(&["once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the config repository"), "{err}");
    assert!(err.contains(&git.url("acme/deploy.git")), "{err}");
    assert_still_v1(&w);
}

#[test]
fn the_daemon_survives_the_git_server_going_away_and_healthz_tells() {
    let mut w = World::new();
    let port = common::free_port();
    w.write_config();
    edit_config(&w, "listen: \"\"", &format!("listen: 127.0.0.1:{port}"));
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    w.start_daemon();
    let healthz = || common::http_get(port, "/healthz");
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v1")
            && healthz().is_some_and(|r| r.0 == 200)),
        "{}",
        w.daemon_log()
    );

    // The git server goes away.
    std::fs::rename(w.path("config.git"), w.path("config.git.away")).unwrap();
    assert!(
        w.wait_for(Duration::from_secs(30), || healthz()
            .is_some_and(|r| r.0 == 503)),
        "{}",
        w.daemon_log()
    );
    let (_, why) = healthz().unwrap();
    assert!(why.contains("config repository"), "{why}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon died: {}",
        w.daemon_log()
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // Back, with a new release: the daemon heals and deploys it.
    std::fs::rename(w.path("config.git.away"), w.path("config.git")).unwrap();
    let (url, sha) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url, &sha, "");
    w.commit("web v2");
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v2")
            && healthz().is_some_and(|r| r.0 == 200)),
        "{}",
        w.daemon_log()
    );
    assert_eq!(w.stop_daemon(), Some(0));
}

/// Every file under `dir`, as text (lossy).
fn all_text(dir: &std::path::Path, out: &mut String) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            all_text(&p, out);
        } else if md.is_file() && md.len() < 10 << 20 {
            out.push_str(&String::from_utf8_lossy(
                &std::fs::read(&p).unwrap_or_default(),
            ));
            out.push('\n');
        }
    }
}

#[test]
fn secrets_never_reach_logs_statuses_errors_or_history() {
    const GIT_TOKEN: &str = "gittoken-5ecret-a1b2c3";
    const FORGE_TOKEN: &str = "forgetoken-5ecret-d4e5f6";
    const URL_PASSWORD: &str = "urlpass-5ecret-778899";
    const URL_QUERY: &str = "sig-5ecret-aabbcc";
    const S3_SECRET: &str = "s3secret-5ecret-ddeeff";
    const WEBHOOK: &str = "webhook-5ecret-001122";
    let secrets = [
        GIT_TOKEN,
        FORGE_TOKEN,
        URL_PASSWORD,
        URL_QUERY,
        S3_SECRET,
        WEBHOOK,
    ];

    let mut w = World::new();
    let forge = Server::start(b"{}".to_vec());
    let store = Server::start(Vec::new());
    store.script(&[Answer::Status(500); 20]);
    let git = Server::start(Vec::new());
    git.script(&[Answer::Status(401); 20]);
    for (name, value) in [
        ("git-token", GIT_TOKEN),
        ("forge-token", FORGE_TOKEN),
        ("s3-id", "AKIDEXAMPLE"),
        ("s3-secret", S3_SECRET),
        ("webhook-secret", WEBHOOK),
    ] {
        std::fs::write(w.path(name), format!("{value}\n")).unwrap();
    }
    // One secret readable by everyone: hoist warns about it.
    use std::os::unix::fs::PermissionsExt;
    for name in [
        "git-token",
        "forge-token",
        "s3-id",
        "s3-secret",
        "webhook-secret",
    ] {
        std::fs::set_permissions(w.path(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(
        w.path("forge-token"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    w.extra_config = format!(
        "allow_http: true\nwebhook_secret_file: {root}/webhook-secret\nstorage:\n  s3:\n    endpoint: {s3}\n    access_key_id_file: {root}/s3-id\n    secret_access_key_file: {root}/s3-secret\n",
        root = w.dir.path().display(),
        s3 = store.url(""),
    );
    w.write_config();
    edit_config(
        &w,
        &format!(
            "status:\n  provider: file\n  path: {}/statuses.jsonl\n",
            w.dir.path().display()
        ),
        &format!(
            "status:\n  provider: github\n  api_url: {}\n  repository: acme/deploy\n  token_file: {}/forge-token\n",
            forge.url("api"),
            w.dir.path().display()
        ),
    );

    // 1. A deploy whose artifact URL carries credentials, failing at the store.
    let (_, sha) = w.make_release("v1", false, &[]);
    let secret_url = format!(
        "http://deploy:{URL_PASSWORD}@127.0.0.1:{}/web.tar.gz?X-Amz-Signature={URL_QUERY}",
        store.port
    );
    w.manifest("web", "v1", &secret_url, &sha, "");
    w.commit("web v1 from a presigned URL");
    let mut out = String::new();
    let mut record = |o: std::process::Output| {
        out.push_str(&String::from_utf8_lossy(&o.stdout));
        out.push_str(&String::from_utf8_lossy(&o.stderr));
    };
    let env = [("RUST_LOG", "debug")];
    record(w.hoist_env(&["once"], &env));
    // 2. The same from S3.
    w.manifest("web", "v1", "s3://bucket/web.tar.gz", &sha, "");
    w.commit("web v1 from s3");
    record(w.hoist_env(&["once"], &env));
    // 3. A git server that wants the token and refuses it.
    edit_config(
        &w,
        &format!("  url: file://{}/config.git\n", w.dir.path().display()),
        &format!(
            "  url: {}\n  token_file: {}/git-token\n",
            git.url("acme/deploy.git"),
            w.dir.path().display()
        ),
    );
    record(w.hoist_env(&["once"], &env));
    record(w.hoist_env(&["status"], &env));
    record(w.hoist_env(&["history", "--json"], &env));

    assert!(out.contains("can be read by other users"), "{out}");
    assert!(out.contains("forge-token"), "{out}");
    assert!(out.contains("[redacted]"), "{out}");
    assert!(!forge.seen().is_empty(), "no status was posted");
    assert!(git.requests() > 0 && store.requests() > 0);

    let mut everything = out.clone();
    all_text(&w.path("state"), &mut everything);
    for s in forge.seen() {
        everything.push_str(&s.body);
    }
    for secret in secrets {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The forge did get its token, as a header, and only there.
    assert!(forge.seen()[0].head.contains(FORGE_TOKEN));
    let _ = sha2::Sha256::digest(b"");
}

#[test]
fn a_forge_answering_5xx_and_429_neither_blocks_nor_fails_a_deploy() {
    let mut w = World::new();
    let forge = Server::start(b"{}".to_vec());
    forge.script(&[
        Answer::Status(503),
        Answer::Status(429),
        Answer::Status(502),
    ]);
    w.extra_config = "allow_http: true\n".into();
    w.write_config();
    edit_config(
        &w,
        &format!(
            "status:\n  provider: file\n  path: {}/statuses.jsonl\n",
            w.dir.path().display()
        ),
        &format!(
            "status:\n  provider: github\n  api_url: {}\n  repository: acme/deploy\n  token_file: {}/forge-token\n",
            forge.url("api"),
            w.dir.path().display()
        ),
    );
    std::fs::write(w.path("forge-token"), "t0ken\n").unwrap();
    let (url, sha) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    let c = w.commit("web v1");
    w.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    // The failed posts were tried again, and the outcome got through.
    let seen = forge.seen();
    assert!(seen.len() >= 4, "{seen:?}");
    let last = seen.last().unwrap();
    assert!(
        last.head.contains(&format!("/statuses/{c}")),
        "{}",
        last.head
    );
    assert!(last.body.contains("\"success\""), "{}", last.body);
}
