//! The config repository: where the branch points, and the manifests at a
//! commit.
//!
//! hoist keeps a bare mirror of the branch in `<state_dir>/repo.git`. A poll
//! first asks the remote where the branch points (like `git ls-remote`, one
//! small request) and fetches only when that commit is not already in the
//! mirror, so an unchanged branch costs one round trip and no transfer.
//! Manifests are read straight from the commit's tree: no work tree exists,
//! so nothing on disk can drift from what the commit says.

use crate::config::{
    CommitConfig, ConfigError, Entry, EntryKind, HostConfig, Inventories, RepoTree,
    read_commit_config,
};
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
    #[error("cannot read {key} {file}: {message}")]
    Secret {
        /// The host config key naming the file.
        key: &'static str,
        file: PathBuf,
        message: String,
    },
    #[error(
        "repo.url {path} does not exist; a local config repository must be a path to a git repository"
    )]
    NoLocalRepo { path: String },
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
    /// Names the inventory read with the manifests (`fleet/<environment>.yaml`).
    environment: String,
    token_file: Option<PathBuf>,
    ssh_key_file: Option<PathBuf>,
    known_hosts_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    /// The mirror, opened once and kept open between polls (shared by clones).
    repo: Arc<Mutex<Option<Repository>>>,
}

/// What `Source::file_at` finds: (blob id, bytes), nothing, or why what
/// is there is not a regular file.
pub type FileAt = Result<Option<(String, Vec<u8>)>, String>;

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
            environment: cfg.environment_name(),
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
        // libgit2's local transport passes the ownership check's error on
        // without its code.
        if e.code() == git2::ErrorCode::Owner || e.message().contains("not owned by current user") {
            return self.not_owned(url);
        }
        SourceError::Remote { url, message: msg }
    }

    /// A local config repository that belongs to another user: git (and
    /// libgit2) refuse to read one, as its hooks and config would run as
    /// whoever reads it. Said in one line with what to change.
    fn not_owned(&self, url: String) -> SourceError {
        let path = local_repo_path(&self.url)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| url.clone());
        let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| nix::unistd::geteuid().to_string());
        let owner = std::fs::metadata(&path)
            .ok()
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                let uid = nix::unistd::Uid::from_raw(m.uid());
                nix::unistd::User::from_uid(uid)
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_else(|| m.uid().to_string())
            })
            .unwrap_or_else(|| "another user".into());
        SourceError::Remote {
            url,
            message: format!(
                "it belongs to {owner}, not to {me} that hoist runs as, and git refuses a repository another user owns; run `chown -R {me} {path}` (or serve it over https:// or ssh://)"
            ),
        }
    }

    fn read_token(&self) -> Result<Option<String>, SourceError> {
        match &self.token_file {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| SourceError::Secret {
                    key: "repo.token_file",
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
                key: "repo.ssh_key_file",
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
        self.check_local_repo()?;
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

    /// A local repository (a path or a file:// URL) that is not there:
    /// libgit2 would call it an "unsupported URL protocol".
    fn check_local_repo(&self) -> Result<(), SourceError> {
        match local_repo_path(&self.url) {
            Some(p) if !p.exists() => Err(SourceError::NoLocalRepo {
                path: p.display().to_string(),
            }),
            _ => Ok(()),
        }
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
        self.check_local_repo()?;
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

    /// The configuration of a commit: its manifests and the inventory of
    /// this server's environment. Anything invalid, a missing manifest
    /// folder included, makes the whole commit invalid (SPEC §2: applied
    /// whole or not at all).
    pub fn manifests_at(
        &self,
        commit: &str,
    ) -> Result<Result<CommitConfig, InvalidCommit>, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |m: String| SourceError::Commit {
            commit: commit.to_string(),
            message: m,
        };
        let oid = Oid::from_str(commit).map_err(|e| cerr(e.message().into()))?;
        let c = repo
            .find_commit(oid)
            .map_err(|e| cerr(e.message().into()))?;
        let root = c.tree().map_err(|e| cerr(e.message().into()))?;
        let tree = GitTree { repo: &repo, root };
        let read = read_commit_config(&tree, &self.apps_path, Inventories::Of(&self.environment));
        Ok(read.map_err(|errors| InvalidCommit { errors }))
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

    /// The regular file at `path` in the commit's tree: its blob id (the
    /// same id means the same content, so nothing needs reading again) and
    /// bytes. Ok(Ok(None)) when there is nothing at `path`; Ok(Err(why))
    /// when something else is there (a symlink, whose target is never read,
    /// or a folder).
    pub fn file_at(&self, commit: &str, path: &str) -> Result<FileAt, SourceError> {
        let repo = self.open_mirror()?;
        let cerr = |e: git2::Error| SourceError::Commit {
            commit: commit.to_string(),
            message: e.message().to_string(),
        };
        let c = repo
            .find_commit(Oid::from_str(commit).map_err(cerr)?)
            .map_err(cerr)?;
        let tree = c.tree().map_err(cerr)?;
        let Ok(entry) = tree.get_path(Path::new(path)) else {
            return Ok(Ok(None));
        };
        // 0o100644 and 0o100755 are regular files; 0o120000 a symlink.
        if entry.kind() != Some(git2::ObjectType::Blob) || entry.filemode() & 0o170000 != 0o100000 {
            return Ok(Err(
                "is not a regular file (it may not be a link or a folder)".into(),
            ));
        }
        let blob = repo.find_blob(entry.id()).map_err(cerr)?;
        Ok(Ok(Some((entry.id().to_string(), blob.content().to_vec()))))
    }

    /// The commit's summary line, for logs and history.
    pub fn summary(&self, commit: &str) -> Option<String> {
        let repo = self.open_mirror().ok()?;
        let c = repo.find_commit(Oid::from_str(commit).ok()?).ok()?;
        c.summary().ok().flatten().map(String::from)
    }
}

/// One commit's tree, as the config layer reads it (`RepoTree`): entries
/// are classified by their git file mode, so a symlink is never read as a
/// manifest (its blob holds the link's target).
struct GitTree<'r> {
    repo: &'r Repository,
    root: git2::Tree<'r>,
}

impl GitTree<'_> {
    fn object(&self, path: &str) -> Result<git2::Object<'_>, String> {
        if path.is_empty() {
            return Ok(self.root.as_object().clone());
        }
        self.root
            .get_path(Path::new(path))
            .and_then(|e| e.to_object(self.repo))
            .map_err(|e| e.message().to_string())
    }
}

impl RepoTree for GitTree<'_> {
    fn list(&self, folder: &str) -> Result<Vec<Entry>, String> {
        let obj = self.object(folder)?;
        let tree = obj.as_tree().ok_or_else(|| "is not a folder".to_string())?;
        Ok(tree
            .iter()
            .map(|e| Entry {
                name: String::from_utf8_lossy(e.name_bytes()).into_owned(),
                kind: match e.filemode() {
                    0o040000 => EntryKind::Folder,
                    0o120000 => EntryKind::Symlink,
                    0o100644 | 0o100755 | 0o100664 => EntryKind::File,
                    _ => EntryKind::Other,
                },
            })
            .collect())
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, String> {
        let obj = self.object(file)?;
        let blob = obj.as_blob().ok_or_else(|| "is not a file".to_string())?;
        Ok(blob.content().to_vec())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The path of a local repository URL: an absolute path (a relative one is
/// resolved against the host config's folder when it loads) or `file://`.
pub fn local_repo_path(url: &str) -> Option<PathBuf> {
    if url.starts_with('/') {
        return Some(PathBuf::from(url));
    }
    if url.starts_with("file://") {
        return reqwest::Url::parse(url).ok()?.to_file_path().ok();
    }
    None
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
        key: "ca_file",
        file: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut loaded = lock(&LOADED);
    if loaded.iter().any(|(p, c)| p == path && *c == pem) {
        return Ok(());
    }
    // SAFETY: libgit2's options are process-global and not synchronised with
    // operations in flight. The LOADED lock serialises these calls, and
    // hoist runs one git operation at a time (the engine awaits each poll),
    // so no TLS connection is being set up while the store changes.
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| {
        bad(format!(
            "it is not a usable certificate file ({})",
            e.message()
        ))
    })?;
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
        let apps = src.manifests_at(&c1).unwrap().unwrap().apps;
        assert_eq!(apps.len(), 1);
        let c2 = commit_manifest(&work, "web.yaml", &manifest("v2"));
        assert_eq!(src.remote_tip().unwrap(), c2);
        assert!(!src.has_commit(&c2), "ls-remote must not fetch");
        assert_eq!(src.poll().unwrap(), c2);
        let apps = src.manifests_at(&c2).unwrap().unwrap().apps;
        assert_eq!(apps.values().next().unwrap().release.as_str(), "v2");
        // The older commit is still readable (reverts need it).
        let old = src.manifests_at(&c1).unwrap().unwrap().apps;
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
        let apps = src.manifests_at(&c2).unwrap().unwrap().apps;
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
        let inv = "fleet/main.yaml";
        let (_, bytes) = src.file_at(&c2, inv).unwrap().unwrap().unwrap();
        assert_eq!(bytes, b"hosts: {}\n");
        assert_eq!(src.file_at(&c1, inv).unwrap(), Ok(None));
        let folder = src.file_at(&c1, "apps").unwrap().unwrap_err();
        assert!(
            folder.contains("not a regular file"),
            "a folder is no file: {folder}"
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
        assert!(e.to_string().contains("repo.url"), "{e}");
        assert!(!e.to_string().contains("unsupported URL protocol"), "{e}");
        gone.url = "file:///nonexistent/config.git".into();
        let e = gone.poll().unwrap_err();
        assert!(matches!(e, SourceError::NoLocalRepo { .. }), "{e}");
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
