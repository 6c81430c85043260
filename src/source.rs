//! The config repository: where the branch points, and the manifests at a
//! commit.
//!
//! hoist keeps a bare mirror of the branch in `<state_dir>/repo.git`. A poll
//! first asks the remote where the branch points (like `git ls-remote`, one
//! small request) and fetches only when that commit is not already in the
//! mirror, so an unchanged branch costs one round trip and no transfer.
//! Manifests are read straight from the commit's tree: no work tree exists,
//! so nothing on disk can drift from what the commit says.

use crate::config::{AppName, AppSet, ConfigError, HostConfig, parse_manifest, validate_app_set};
use git2::{Cred, Direction, FetchOptions, Oid, RemoteCallbacks, Repository};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod known_hosts;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot reach the config repository {url}: {message}")]
    Remote { url: String, message: String },
    #[error("the config repository {url} refused hoist's credentials: {message}")]
    Auth { url: String, message: String },
    #[error("refusing the config repository {url}: {message}")]
    HostKey { url: String, message: String },
    #[error("branch {branch} does not exist in the config repository {url}")]
    NoBranch { url: String, branch: String },
    #[error("the local mirror {path} is unusable: {message}")]
    Mirror { path: PathBuf, message: String },
    #[error("cannot read {file}: {message}")]
    Secret { file: PathBuf, message: String },
    #[error("commit {commit} is not in the local mirror: {message}")]
    Commit { commit: String, message: String },
}

impl SourceError {
    /// A clear one-line message, safe to log and to show in /healthz.
    pub fn short(&self) -> String {
        self.to_string()
    }
}

/// Manifests that could not be read from a commit.
#[derive(Debug, Clone)]
pub struct InvalidCommit {
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for InvalidCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_default();
        if self.errors.len() > 1 {
            write!(f, "{first} (and {} more)", self.errors.len() - 1)
        } else {
            f.write_str(&first)
        }
    }
}

#[derive(Clone)]
pub struct Source {
    mirror: PathBuf,
    url: String,
    branch: String,
    apps_path: String,
    token_file: Option<PathBuf>,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    /// The mirror, opened once and kept open between polls (shared by clones).
    repo: Arc<Mutex<Option<Repository>>>,
}

/// The open mirror, held for one operation.
struct Mirror<'a>(std::sync::MutexGuard<'a, Option<Repository>>);

impl std::ops::Deref for Mirror<'_> {
    type Target = Repository;

    fn deref(&self) -> &Repository {
        self.0
            .as_ref()
            .expect("Source::open_mirror fills the slot before handing it out")
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &crate::redact::url(&self.url))
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

/// Why a callback refused to go on, kept so the error says that rather than
/// libgit2's generic "authentication replays" or "user rejected certificate".
type Refusal = Arc<Mutex<Option<SourceError>>>;

/// How long a git server may take to accept a connection.
pub const GIT_CONNECT_TIMEOUT_MS: i32 = 30_000;
/// How long a git server may stay silent mid-request (a hung server must
/// not hang the daemon's loop).
pub const GIT_IO_TIMEOUT_MS: i32 = 60_000;

/// Sets libgit2's connect and read/write timeouts for git over the network.
/// Call it once, before any thread starts (they are process-wide globals).
pub fn set_network_timeouts() {
    // SAFETY: called at the top of main, before the runtime or any other
    // thread exists, so nothing reads these globals concurrently.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(GIT_CONNECT_TIMEOUT_MS);
        let _ = git2::opts::set_server_timeout_in_milliseconds(GIT_IO_TIMEOUT_MS);
    }
}

/// A commit's signature (as stored in its `gpgsig` header) and the bytes it signs.
pub type SignedCommit = (Vec<u8>, Vec<u8>);

impl Source {
    pub fn new(cfg: &HostConfig) -> Source {
        Source {
            mirror: cfg.state_dir.join("repo.git"),
            url: cfg.repo.url.clone(),
            branch: cfg.repo.branch.clone(),
            apps_path: cfg.apps_path().to_string(),
            token_file: cfg.repo.token_file.clone(),
            ssh_key_file: cfg.repo.ssh_key_file.clone(),
            known_hosts_file: cfg.repo.known_hosts_file.clone(),
            ca_file: cfg.ca_file.clone(),
            repo: Arc::default(),
        }
    }

    pub fn shown_url(&self) -> String {
        crate::redact::url(&self.url)
    }

    /// The error for a failed remote operation: what a callback refused if
    /// one did, else libgit2's message with any secret masked.
    fn remote_err(&self, refusal: &Refusal, e: &git2::Error) -> SourceError {
        if let Some(r) = lock(refusal).take() {
            return r;
        }
        let secret = self.read_token().ok().flatten();
        let msg = crate::redact::secrets(e.message(), &[secret.as_deref().unwrap_or("")]);
        let url = self.shown_url();
        if e.class() == git2::ErrorClass::Ssl || e.code() == git2::ErrorCode::Certificate {
            let hint = if self.ca_file.is_some() {
                "; the certificate is not signed by the system CAs or the ca_file"
            } else {
                "; for a private CA, set ca_file in the host config"
            };
            return SourceError::Remote {
                url,
                message: format!("{msg}{hint}"),
            };
        }
        if e.code() == git2::ErrorCode::Auth {
            return SourceError::Auth { url, message: msg };
        }
        SourceError::Remote { url, message: msg }
    }

    fn read_token(&self) -> Result<Option<String>, SourceError> {
        match &self.token_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| SourceError::Secret {
                    file: p.clone(),
                    message: e.to_string(),
                }),
        }
    }

    /// The mirror, opened (or created) on first use and kept open: opening
    /// a repository reads its config files, which an unchanged poll need not
    /// pay for each time. Opened again if its directory went away.
    fn open_mirror(&self) -> Result<Mirror<'_>, SourceError> {
        let mut slot = lock(&self.repo);
        if slot.is_none() || !self.mirror.is_dir() {
            *slot = None;
            *slot = Some(self.open_mirror_fresh()?);
        }
        Ok(Mirror(slot))
    }

    fn open_mirror_fresh(&self) -> Result<Repository, SourceError> {
        let err = |e: git2::Error| SourceError::Mirror {
            path: self.mirror.clone(),
            message: e.message().to_string(),
        };
        match Repository::open_bare(&self.mirror) {
            Ok(r) => Ok(r),
            Err(_) => {
                if self.mirror.exists() {
                    // A mirror that does not open (interrupted first init)
                    // holds nothing we need: start it again.
                    let _ = std::fs::remove_dir_all(&self.mirror);
                }
                Repository::init_bare(&self.mirror).map_err(err)
            }
        }
    }

    /// Credentials and host checks for one remote operation. Credentials are
    /// only ever offered to the configured host (a redirect elsewhere gets
    /// none), and each is offered once: asked again means refused.
    fn callbacks(&self, refusal: &Refusal) -> Result<RemoteCallbacks<'static>, SourceError> {
        // http too: an allowed http:// remote may redirect to https.
        if self.url.starts_with("https://") || self.url.starts_with("http://") {
            trust_ca_file(self.ca_file.as_deref())?;
        }
        let token = self.read_token()?;
        if let Some(k) = &self.ssh_key_file
            && let Err(e) = std::fs::File::open(k)
        {
            return Err(SourceError::Secret {
                file: k.clone(),
                message: e.to_string(),
            });
        }
        let shown = self.shown_url();
        let ssh = known_hosts::Endpoint::of_url(&self.url);
        let home_host = url_host(&self.url).or_else(|| ssh.as_ref().map(|e| e.host.clone()));
        let user_in_url = ssh
            .as_ref()
            .and_then(|e| e.user.clone())
            .or_else(|| url_user(&self.url));
        let token_file = self.token_file.clone();
        let key_file = self.ssh_key_file.clone();
        let (mut token_offered, mut key_offered) = (false, false);
        let refused = Arc::clone(refusal);
        let mut cb = RemoteCallbacks::new();
        cb.credentials(move |url, username, allowed| {
            let refuse = |message: String| {
                let e = SourceError::Auth {
                    url: shown.clone(),
                    message: message.clone(),
                };
                *lock(&refused) = Some(e);
                Err(git2::Error::from_str(&message))
            };
            let asked_by = url_host(url).or_else(|| {
                known_hosts::Endpoint::of_url(url).map(|e| e.host)
            });
            if asked_by.is_some() && asked_by != home_host {
                return refuse(format!(
                    "{} asks for credentials, and hoist gives them only to {}",
                    asked_by.unwrap_or_default(),
                    home_host.clone().unwrap_or_default()
                ));
            }
            if allowed.contains(git2::CredentialType::USERNAME) {
                return Cred::username(user_in_url.as_deref().unwrap_or("git"));
            }
            if allowed.contains(git2::CredentialType::SSH_KEY) {
                let Some(k) = &key_file else {
                    return refuse(
                        "the SSH server asks for a key, and repo.ssh_key_file is not set".into(),
                    );
                };
                if key_offered {
                    return refuse(format!(
                        "the SSH server did not accept the key in repo.ssh_key_file {}",
                        k.display()
                    ));
                }
                key_offered = true;
                return Cred::ssh_key(username.unwrap_or("git"), None, k, None);
            }
            if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                let (Some(t), Some(file)) = (&token, &token_file) else {
                    return refuse(
                        "the server asks for credentials, and repo.token_file is not set".into(),
                    );
                };
                if token_offered {
                    return refuse(format!(
                        "the server did not accept the token in repo.token_file {}",
                        file.display()
                    ));
                }
                token_offered = true;
                return Cred::userpass_plaintext(user_in_url.as_deref().unwrap_or("hoist"), t);
            }
            refuse("the server asks for a kind of credentials hoist cannot give (use repo.token_file for https, repo.ssh_key_file for ssh)".into())
        });
        let known_hosts = self.known_hosts_file.clone();
        let shown = self.shown_url();
        let refused = Arc::clone(refusal);
        cb.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // An https certificate: OpenSSL already checked it against
                // the system CAs and ca_file (see trust_ca_file).
                return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
            };
            let verdict = match (&ssh, &known_hosts, hostkey.hostkey()) {
                (_, None, _) => Err(
                    "repo.known_hosts_file is not set, so the SSH server cannot be trusted"
                        .to_string(),
                ),
                (None, _, _) => Err("the repository URL names no SSH host".to_string()),
                (_, _, None) => Err("the SSH server sent no host key".to_string()),
                (Some(endpoint), Some(file), Some(raw)) => std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read known_hosts_file {}: {e}", file.display()))
                    .and_then(|text| known_hosts::check(file, &text, endpoint, raw)),
            };
            match verdict {
                Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
                Err(message) => {
                    *lock(&refused) = Some(SourceError::HostKey {
                        url: shown.clone(),
                        message: message.clone(),
                    });
                    Err(git2::Error::from_str(&message))
                }
            }
        });
        Ok(cb)
    }

    /// Where the branch points on the remote, without fetching: one
    /// ls-remote style round trip.
    pub fn remote_tip(&self) -> Result<String, SourceError> {
        let repo = self.open_mirror()?;
        let refusal = Refusal::default();
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.remote_err(&refusal, &e))?;
        let cb = self.callbacks(&refusal)?;
        let conn = remote
            .connect_auth(Direction::Fetch, Some(cb), None)
            .map_err(|e| self.remote_err(&refusal, &e))?;
        let want = format!("refs/heads/{}", self.branch);
        let heads = conn.list().map_err(|e| self.remote_err(&refusal, &e))?;
        heads
            .iter()
            .find(|h| h.name() == want)
            .map(|h| h.oid().to_string())
            .ok_or_else(|| SourceError::NoBranch {
                url: self.shown_url(),
                branch: self.branch.clone(),
            })
    }

    /// Whether the mirror already has this commit.
    pub fn has_commit(&self, commit: &str) -> bool {
        let Ok(repo) = self.open_mirror() else {
            return false;
        };
        Oid::from_str(commit)
            .ok()
            .and_then(|oid| repo.find_commit(oid).ok())
            .is_some()
    }

    /// Fetches the branch into the mirror. The mirror keeps
    /// `refs/remotes/origin/<branch>`, which libgit2 offers the server as
    /// "have", so only commits the mirror lacks are transferred.
    pub fn fetch(&self) -> Result<(), SourceError> {
        let repo = self.open_mirror()?;
        let refusal = Refusal::default();
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.remote_err(&refusal, &e))?;
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(self.callbacks(&refusal)?);
        fo.download_tags(git2::AutotagOption::None);
        let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", self.branch);
        remote
            .fetch(&[refspec.as_str()], Some(&mut fo), None)
            .map_err(|e| self.remote_err(&refusal, &e))
    }

    /// One poll: the branch tip, fetched into the mirror if it is new.
    pub fn poll(&self) -> Result<String, SourceError> {
        let tip = self.remote_tip()?;
        if !self.has_commit(&tip) {
            self.fetch()?;
            if !self.has_commit(&tip) {
                return Err(SourceError::Commit {
                    commit: tip,
                    message: "the fetch did not bring it".into(),
                });
            }
        }
        Ok(tip)
    }

    /// The manifests in the commit's manifest folder. Any invalid manifest
    /// makes the whole commit invalid (SPEC §2: applied whole or not at all).
    pub fn manifests_at(&self, commit: &str) -> Result<Result<AppSet, InvalidCommit>, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |m: String| SourceError::Commit {
            commit: commit.to_string(),
            message: m,
        };
        let oid = Oid::from_str(commit).map_err(|e| cerr(e.message().into()))?;
        let c = repo
            .find_commit(oid)
            .map_err(|e| cerr(e.message().into()))?;
        let tree = c.tree().map_err(|e| cerr(e.message().into()))?;
        let folder = if self.apps_path == "." {
            tree
        } else {
            match tree.get_path(Path::new(&self.apps_path)) {
                Ok(entry) => match entry.to_object(&repo).ok().and_then(|o| o.into_tree().ok()) {
                    Some(t) => t,
                    None => {
                        return Ok(Err(InvalidCommit {
                            errors: vec![ConfigError::new(
                                &self.apps_path,
                                None,
                                "is not a folder of manifests",
                            )],
                        }));
                    }
                },
                // No manifest folder: no apps.
                Err(_) => return Ok(Ok(AppSet::new())),
            }
        };
        let mut apps = AppSet::new();
        let mut errors = Vec::new();
        let base = PathBuf::from(if self.apps_path == "." {
            ""
        } else {
            &self.apps_path
        });
        for entry in folder.iter() {
            let Ok(name) = entry.name() else { continue };
            if entry.kind() != Some(git2::ObjectType::Blob) {
                continue;
            }
            let shown = base.join(name);
            if name.ends_with(".yml") {
                errors.push(ConfigError::new(
                    &shown,
                    None,
                    "manifests must end in .yaml (this file would be ignored)",
                ));
                continue;
            }
            if !name.ends_with(".yaml") {
                continue;
            }
            let blob = match repo.find_blob(entry.id()) {
                Ok(b) => b,
                Err(e) => {
                    errors.push(ConfigError::new(&shown, None, e.message().to_string()));
                    continue;
                }
            };
            let text = match std::str::from_utf8(blob.content()) {
                Ok(t) => t,
                Err(_) => {
                    errors.push(ConfigError::new(&shown, None, "is not UTF-8 text"));
                    continue;
                }
            };
            match parse_manifest(&shown, text) {
                Ok((app, m)) => {
                    apps.insert(app, m);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            let file_of = |a: &AppName| base.join(format!("{a}.yaml"));
            if let Err(e) = validate_app_set(&apps, &file_of) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(Ok(apps))
        } else {
            Ok(Err(InvalidCommit { errors }))
        }
    }

    /// The commit's signature and the bytes it signs (the commit object
    /// without its `gpgsig` header); None when the commit is not signed.
    pub fn commit_signature(&self, commit: &str) -> Result<Option<SignedCommit>, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |m: &str| SourceError::Commit {
            commit: commit.to_string(),
            message: m.to_string(),
        };
        let oid = Oid::from_str(commit).map_err(|e| cerr(e.message()))?;
        match repo.extract_signature(&oid, None) {
            Ok((sig, data)) => Ok(Some((sig.to_vec(), data.to_vec()))),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(cerr(e.message())),
        }
    }

    /// Keeps the mirror at `path` instead of `<state_dir>/repo.git`: for
    /// `hoist fleet` in CI, which has no state dir, and must not share a
    /// running daemon's mirror.
    pub fn with_mirror(mut self, path: PathBuf) -> Source {
        self.mirror = path;
        self.repo = Arc::default();
        self
    }

    /// The full id of `rev`: a commit id (abbreviated or not) in the
    /// mirror, or the name of a fetched branch.
    pub fn resolve(&self, rev: &str) -> Result<String, SourceError> {
        let repo = self.open_mirror()?;
        let found = repo
            .revparse_single(rev)
            .or_else(|_| repo.revparse_single(&format!("refs/remotes/origin/{rev}")))
            .and_then(|o| o.peel_to_commit());
        found
            .map(|c| c.id().to_string())
            .map_err(|e| SourceError::Commit {
                commit: rev.to_string(),
                message: e.message().to_string(),
            })
    }

    /// `commit` and its first parents, newest first, at most `limit`: the
    /// branch's own history as merges to it made it.
    pub fn first_parents(&self, commit: &str, limit: usize) -> Result<Vec<String>, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |e: git2::Error| SourceError::Commit {
            commit: commit.to_string(),
            message: e.message().to_string(),
        };
        let mut c = repo
            .find_commit(Oid::from_str(commit).map_err(cerr)?)
            .map_err(cerr)?;
        let mut out = vec![c.id().to_string()];
        while out.len() < limit {
            match c.parent(0) {
                Ok(p) => {
                    out.push(p.id().to_string());
                    c = p;
                }
                // The root, or a shallow end.
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The bytes of the file at `path` in the commit's tree; `None` when
    /// there is no such file.
    pub fn file_at(&self, commit: &str, path: &Path) -> Result<Option<Vec<u8>>, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |e: git2::Error| SourceError::Commit {
            commit: commit.to_string(),
            message: e.message().to_string(),
        };
        let c = repo
            .find_commit(Oid::from_str(commit).map_err(cerr)?)
            .map_err(cerr)?;
        let tree = c.tree().map_err(cerr)?;
        let Ok(entry) = tree.get_path(path) else {
            return Ok(None);
        };
        match entry.to_object(&repo).map_err(cerr)?.into_blob() {
            Ok(blob) => Ok(Some(blob.content().to_vec())),
            Err(_) => Ok(None),
        }
    }

    /// The commit's summary line, for logs and history.
    pub fn summary(&self, commit: &str) -> Option<String> {
        let repo = self.open_mirror().ok()?;
        let c = repo.find_commit(Oid::from_str(commit).ok()?).ok()?;
        c.summary().ok().flatten().map(String::from)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The host of an http(s) URL, lowercased; None for other URLs.
fn url_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return None;
    }
    parsed.host_str().map(str::to_ascii_lowercase)
}

/// The user named in an http(s) URL (`https://deploy@host/...`), used as the
/// username beside the token (GitLab deploy tokens need theirs).
fn url_user(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    Some(parsed.username().to_string()).filter(|u| !u.is_empty())
}

/// Makes libgit2's OpenSSL trust `ca_file` besides the system CAs.
///
/// libgit2 has one TLS context for the whole process, and its only way to
/// add trust anchors is `GIT_OPT_SET_SSL_CERT_LOCATIONS`, which *adds* the
/// file's certificates to that context; its certificate callback, the other
/// door, sees only the server's leaf certificate, so it could not follow an
/// intermediate CA and would mean checking TLS a second time by hand. hoist
/// has one host config per process, so process-wide trust is the right
/// scope. Each distinct content is loaded once (loading again would only add
/// duplicates); certificates removed from the file stay trusted by git until
/// hoist restarts, which docs/architecture.md notes.
fn trust_ca_file(ca_file: Option<&Path>) -> Result<(), SourceError> {
    static LOADED: Mutex<Vec<(PathBuf, Vec<u8>)>> = Mutex::new(Vec::new());
    let Some(path) = ca_file else { return Ok(()) };
    let bad = |message: String| SourceError::Secret {
        file: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("the ca_file cannot be read ({e})")))?;
    let mut loaded = lock(&LOADED);
    if loaded.iter().any(|(p, c)| p == path && *c == pem) {
        return Ok(());
    }
    // SAFETY: libgit2's options are process-global and not synchronised with
    // operations in flight. The LOADED lock serialises these calls, and
    // hoist runs one git operation at a time (the engine awaits each poll),
    // so no TLS connection is being set up while the store changes.
    unsafe { git2::opts::set_ssl_cert_file(path) }
        .map_err(|e| bad(format!("the ca_file cannot be used ({})", e.message())))?;
    loaded.push((path.to_path_buf(), pem));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

    fn setup() -> (tempfile::TempDir, Source, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("config.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        std::fs::create_dir_all(work.join("apps")).unwrap();
        let cfg_text = format!(
            "state_dir: {}\nrepo:\n  url: file://{}\n",
            dir.path().join("state").display(),
            bare.display()
        );
        let cfg = HostConfig::parse(&dir.path().join("hoist.yaml"), &cfg_text).unwrap();
        (dir, Source::new(&cfg), work)
    }

    fn commit_manifest(work: &Path, name: &str, text: &str) -> String {
        std::fs::write(work.join("apps").join(name), text).unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", "change"]);
        git(work, &["push", "-q", "origin", "HEAD:main"]);
        git(work, &["rev-parse", "HEAD"])
    }

    fn manifest(release: &str) -> String {
        format!(
            "release: {release}\nartifact:\n  url: file:///x.tar.gz\n  sha256: {SHA}\npm2:\n  - name: web\n    script: server.js\n"
        )
    }

    #[test]
    fn polls_fetches_and_reads_manifests() {
        let (_d, src, work) = setup();
        let c1 = commit_manifest(&work, "web.yaml", &manifest("v1"));
        assert_eq!(src.poll().unwrap(), c1);
        let apps = src.manifests_at(&c1).unwrap().unwrap();
        assert_eq!(apps.len(), 1);
        let c2 = commit_manifest(&work, "web.yaml", &manifest("v2"));
        assert_eq!(src.remote_tip().unwrap(), c2);
        assert!(!src.has_commit(&c2), "ls-remote must not fetch");
        assert_eq!(src.poll().unwrap(), c2);
        let apps = src.manifests_at(&c2).unwrap().unwrap();
        assert_eq!(apps.values().next().unwrap().release.as_str(), "v2");
        // The older commit is still readable (reverts need it).
        let old = src.manifests_at(&c1).unwrap().unwrap();
        assert_eq!(old.values().next().unwrap().release.as_str(), "v1");
        assert_eq!(src.summary(&c2).as_deref(), Some("change"));
    }

    #[test]
    fn the_open_mirror_is_shared_by_clones_and_opened_again_when_it_goes_away() {
        let (_d, src, work) = setup();
        let c1 = commit_manifest(&work, "web.yaml", &manifest("v1"));
        assert_eq!(src.poll().unwrap(), c1);
        // A clone (as handed to a blocking task) sees what the other fetched.
        let c2 = commit_manifest(&work, "web.yaml", &manifest("v2"));
        let clone = src.clone();
        assert_eq!(clone.poll().unwrap(), c2);
        assert!(src.has_commit(&c2));
        // Someone removes the mirror between polls: the next poll rebuilds it
        // rather than using a handle to a directory that is gone.
        std::fs::remove_dir_all(&src.mirror).unwrap();
        assert!(!src.has_commit(&c1));
        assert_eq!(src.poll().unwrap(), c2);
        let apps = src.manifests_at(&c2).unwrap().unwrap();
        assert_eq!(apps.values().next().unwrap().release.as_str(), "v2");
    }

    #[test]
    fn an_invalid_manifest_invalidates_the_commit() {
        let (_d, src, work) = setup();
        commit_manifest(&work, "web.yaml", &manifest("v1"));
        let c = commit_manifest(&work, "api.yaml", &(manifest("v1") + "bogus: 1\n"));
        src.poll().unwrap();
        let err = src.manifests_at(&c).unwrap().unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(err.to_string().contains("apps/api.yaml:"), "{err}");
    }

    #[test]
    fn history_files_and_refs_at_a_commit() {
        let (dir, src, work) = setup();
        let c1 = commit_manifest(&work, "web.yaml", &manifest("v1"));
        std::fs::create_dir_all(work.join("fleet")).unwrap();
        std::fs::write(work.join("fleet/main.yaml"), "hosts: {}\n").unwrap();
        let c2 = commit_manifest(&work, "web.yaml", &manifest("v2"));
        // A merge: its first parent is the branch, not the side branch.
        git(&work, &["checkout", "-q", "-b", "side", &c1]);
        std::fs::write(work.join("apps/api.yaml"), manifest("v1")).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "side"]);
        let side = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["checkout", "-q", "main"]);
        git(&work, &["merge", "-q", "--no-ff", "-m", "merge", "side"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        let merge = git(&work, &["rev-parse", "HEAD"]);
        let src = src.with_mirror(dir.path().join("elsewhere.git"));
        assert_eq!(src.poll().unwrap(), merge);
        assert!(dir.path().join("elsewhere.git").is_dir());
        assert_eq!(
            src.first_parents(&merge, 10).unwrap(),
            [merge.clone(), c2.clone(), c1.clone()]
        );
        assert_eq!(
            src.first_parents(&merge, 2).unwrap(),
            [merge.clone(), c2.clone()]
        );
        assert!(!src.first_parents(&merge, 10).unwrap().contains(&side));
        let inv = Path::new("fleet/main.yaml");
        assert_eq!(
            src.file_at(&c2, inv).unwrap().as_deref(),
            Some(&b"hosts: {}\n"[..])
        );
        assert_eq!(src.file_at(&c1, inv).unwrap(), None);
        assert_eq!(
            src.file_at(&c1, Path::new("apps")).unwrap(),
            None,
            "a folder is no file"
        );
        assert_eq!(src.resolve(&c2[..10]).unwrap(), c2);
        assert_eq!(src.resolve("main").unwrap(), merge);
        let e = src.resolve("nope").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn missing_branch_and_unreachable_remote_are_clear() {
        let (_d, src, _work) = setup();
        let e = src.poll().unwrap_err();
        assert!(matches!(e, SourceError::NoBranch { .. }), "{e}");
        let mut gone = src.clone();
        gone.url = "/nonexistent/config.git".into();
        let e = gone.poll().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/config.git"), "{e}");
    }
}

#[cfg(test)]
mod url_tests {
    use super::{url_host, url_user};

    #[test]
    fn hosts_and_users_of_http_urls() {
        assert_eq!(
            url_host("https://Git.Example.com:8443/a.git").as_deref(),
            Some("git.example.com")
        );
        assert_eq!(url_host("ssh://git@host/a.git"), None);
        assert_eq!(url_host("/srv/config.git"), None);
        assert_eq!(
            url_user("https://deploy-token@git.example.com/a.git").as_deref(),
            Some("deploy-token")
        );
        assert_eq!(url_user("https://git.example.com/a.git"), None);
    }
}
