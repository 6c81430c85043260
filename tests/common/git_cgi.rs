//! `git http-backend` run as a CGI program (RFC 3875), one request at a
//! time, for the git servers of the tests (`git_http`) and of the benchmark
//! (benches/compare/servers.rs, which includes this file by path). It leans
//! on nothing else in either, so both compile it as it is.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use tokio::io::AsyncWriteExt;

/// Status, headers, body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

pub struct Backend {
    pub program: PathBuf,
    /// `GIT_PROJECT_ROOT`: `/x.git` is `root/x.git`.
    pub root: PathBuf,
    /// `REMOTE_USER`, as a web server sets it once it has authenticated
    /// someone; None for an anonymous server.
    pub user: Option<String>,
}

/// `git http-backend` of the git on PATH, else Debian's.
pub fn program() -> PathBuf {
    let exec_path = std::process::Command::new("git")
        .arg("--exec-path")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(p) = exec_path.map(|d| d.join("git-http-backend"))
        && p.exists()
    {
        return p;
    }
    PathBuf::from("/usr/lib/git-core/git-http-backend")
}

impl Backend {
    /// Runs `git http-backend` for one request.
    pub async fn answer(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Answer {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", method.as_str())
            .env("PATH_INFO", uri.path())
            .env("QUERY_STRING", uri.query().unwrap_or(""))
            .env("CONTENT_TYPE", header("content-type"))
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
            .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(user) = &self.user {
            cmd.env("REMOTE_USER", user);
        }
        let Ok(mut child) = cmd.spawn() else {
            return (500, vec![], b"cannot run git-http-backend\n".to_vec());
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&body).await;
        }
        let Ok(out) = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await
        else {
            return (504, vec![], b"git-http-backend took too long\n".to_vec());
        };
        let Ok(out) = out else {
            return (500, vec![], b"git-http-backend failed\n".to_vec());
        };
        // Headers, a blank line, the body.
        let split = out
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| {
                out.stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|i| (i, 2))
            });
        let Some((end, sep)) = split else {
            return (
                500,
                vec![],
                format!("bad CGI answer: {}", String::from_utf8_lossy(&out.stderr)).into_bytes(),
            );
        };
        let head = String::from_utf8_lossy(&out.stdout[..end]).into_owned();
        let mut status = 200;
        let mut resp_headers = Vec::new();
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim().to_string();
            if k.eq_ignore_ascii_case("status") {
                status = v
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
            } else {
                resp_headers.push((k.to_string(), v));
            }
        }
        (status, resp_headers, out.stdout[end + sep..].to_vec())
    }
}
