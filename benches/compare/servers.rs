//! The servers the daemons talk to, on 127.0.0.1 only:
//!
//! - `S3`: s3s-fs (a real S3 implementation over a directory, checking
//!   SigV4), as a child process with generated credentials;
//! - `GitHttp`: the real `git http-backend` behind a small HTTP server that
//!   records every request, so the rows can count what polling costs the
//!   git server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use crate::procs::{self, Guard};

// The CGI runner is the tests' own, so the benchmark's git server answers
// exactly as the one the tests check hoist against.
#[path = "../../tests/common/git_cgi.rs"]
mod git_cgi;

use git_cgi::Backend;

// The GitHub-shaped fake forge of the rollout tests (statuses kept and
// served back with `Date`, `ETag`/`304` and `Link` pages, requests counted
// per token), with the test server it runs on: the rollout row holds hoist
// to the same forge the tests do.
#[allow(dead_code)]
#[path = "../../tests/common/forge.rs"]
pub mod forge;
#[allow(dead_code)]
#[path = "../../tests/common/serve.rs"]
mod serve;

pub struct S3 {
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    _server: Guard,
}

impl S3 {
    /// Starts s3s-fs over `root` with a bucket `releases`.
    pub fn start(s3s_fs: &Path, root: &Path) -> Result<S3, String> {
        let bucket = "releases".to_string();
        std::fs::create_dir_all(root.join(&bucket)).map_err(|e| e.to_string())?;
        let mut rng = crate::generate::Rng::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7),
        );
        let key_id = format!("BENCH{:016X}", rng.next());
        let secret = format!("{:016x}{:016x}", rng.next(), rng.next());
        let port = procs::free_port();
        let log = std::fs::File::create(root.with_extension("log")).map_err(|e| e.to_string())?;
        let server = Guard::spawn(
            "s3s-fs",
            Command::new(s3s_fs)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &key_id, "--secret-key", &secret])
                .arg(root)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
                .stderr(Stdio::from(log)),
        )?;
        let up = procs::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            return Err("s3s-fs did not start listening within 15 s".into());
        }
        Ok(S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            key_id,
            secret,
            bucket,
            _server: server,
        })
    }

    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{}/{key}", self.endpoint, self.bucket)
    }

    pub fn s3_url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// curl's SigV4 arguments for this server. S3 wants the payload hash
    /// header, which curl does not add by itself; the body is not signed
    /// (as the AWS CLI does for streamed uploads).
    pub fn curl_auth(&self) -> Vec<String> {
        vec![
            "-H".into(),
            "x-amz-content-sha256: UNSIGNED-PAYLOAD".into(),
            "--aws-sigv4".into(),
            "aws:amz:us-east-1:s3".into(),
            "--user".into(),
            format!("{}:{}", self.key_id, self.secret),
        ]
    }

    /// Runs curl against this server, keeping the secret out of any error.
    pub fn curl(
        &self,
        curl: &Path,
        args: &[&std::ffi::OsStr],
        limit: Duration,
    ) -> Result<(), String> {
        procs::run_ok(
            Command::new(curl)
                .args(["-sS", "--fail"])
                .args(args)
                .args(self.curl_auth()),
            limit,
        )
        .map(|_| ())
        .map_err(|e| e.replace(&self.secret, "[secret]"))
    }

    /// Uploads `file` as `key` with a signed PUT (so the server stores its
    /// ETag once instead of hashing the object on every GET).
    pub fn put(&self, curl: &Path, file: &Path, key: &str) -> Result<(), String> {
        let url = self.object_url(key);
        self.curl(
            curl,
            &["-T".as_ref(), file.as_os_str(), url.as_ref()],
            Duration::from_secs(600),
        )
    }

    pub fn settings(&self) -> hoist::artifact::S3Settings {
        hoist::artifact::S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: Some(self.key_id.clone()),
            secret_access_key: Some(self.secret.clone()),
        }
    }

    /// Writes the credentials into files, as a host config wants them; returns
    /// the `storage:` section.
    pub fn host_config_section(&self, dir: &Path) -> Result<String, String> {
        let (k, s) = (dir.join("s3-key-id"), dir.join("s3-secret"));
        std::fs::write(&k, &self.key_id).map_err(|e| e.to_string())?;
        std::fs::write(&s, &self.secret).map_err(|e| e.to_string())?;
        Ok(format!(
            "storage:\n  s3:\n    endpoint: {}\n    region: us-east-1\n    access_key_id_file: {}\n    secret_access_key_file: {}\n",
            self.endpoint,
            k.display(),
            s.display()
        ))
    }
}

/// One request the git server answered.
#[derive(Clone, Debug)]
pub struct GitRequest {
    pub at: Instant,
    pub method: String,
    /// Path and query, e.g. `/fleet.git/info/refs?service=git-upload-pack`.
    pub target: String,
}

pub struct GitHttp {
    pub port: u16,
    requests: Arc<Mutex<Vec<GitRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Setup {
    backend: Backend,
    requests: Arc<Mutex<Vec<GitRequest>>>,
}

impl GitHttp {
    /// Serves the bare repositories under `root` (`/x.git` is `root/x.git`).
    pub fn start(rt: &tokio::runtime::Runtime, root: &Path) -> Result<GitHttp, String> {
        let program = git_cgi::program();
        if !program.exists() {
            return Err(format!("{} not found", program.display()));
        }
        let requests = Arc::new(Mutex::new(Vec::new()));
        let setup = Arc::new(Setup {
            backend: Backend {
                program,
                root: root.to_path_buf(),
                user: None,
            },
            requests: Arc::clone(&requests),
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let setup = Arc::clone(&setup);
                async move {
                    let target = uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    if let Ok(mut r) = setup.requests.lock() {
                        r.push(GitRequest {
                            at: Instant::now(),
                            method: method.to_string(),
                            target,
                        });
                    }
                    let (status, head, body) =
                        setup.backend.answer(&method, &uri, &headers, body).await;
                    let mut resp = Response::builder().status(status);
                    for (k, v) in head {
                        resp = resp.header(k, v);
                    }
                    resp.body(Body::from(body))
                        .unwrap_or_else(|_| Response::new(Body::empty()))
                }
            },
        );
        let task = rt.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(GitHttp {
            port,
            requests,
            task,
        })
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }

    /// Requests for `repo` (e.g. `fleet.git`) at or after `since`:
    /// (ref advertisements, i.e. polls; upload-pack POSTs, i.e. fetches).
    pub fn count(&self, repo: &str, since: Instant, until: Instant) -> (usize, usize) {
        let prefix = format!("/{repo}/");
        let r = self.requests.lock().map(|r| r.clone()).unwrap_or_default();
        let mine = r
            .iter()
            .filter(|q| q.at >= since && q.at < until && q.target.starts_with(&prefix));
        let (mut refs, mut packs) = (0, 0);
        for q in mine {
            if q.target.contains("/info/refs") {
                refs += 1;
            } else if q.method == "POST" {
                packs += 1;
            }
        }
        (refs, packs)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
