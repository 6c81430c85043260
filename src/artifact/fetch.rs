//! Getting an artifact's bytes onto this server: a content-addressed cache
//! (`<state_dir>/cache/<sha256>`) filled from `file://`, `https://` (or
//! `http://` when allowed) and `s3://` URLs.
//!
//! The cache is keyed by the manifest's sha256, not by URL, so a revert to a
//! release seen before, or the same artifact published under another name,
//! needs no network at all. A file only ever appears under its hash after
//! the bytes streamed into a temp file beside it hashed to exactly that
//! value and were fsynced, so whatever is in the cache is trusted without
//! hashing it again. Downloads stream through a fixed buffer: an artifact is
//! never held in memory.
//!
//! URLs are shown in errors only through [`redact`], because userinfo and
//! query strings (presigned URLs) carry credentials.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStoreExt, RetryConfig};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ArtifactError;
use super::unpack::{
    Chunks, UnpackLimits, UnpackStats, remove_tree as remove_unpacked, unpack, unpack_reader,
};
use super::verify::{Sha256Stream, normalize_sha256};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the next bytes of a body; a download may take as long as it needs.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;
const BUFFER: usize = 256 * 1024;
/// Downloaded chunks that may wait for the unpack: with 256 KiB reads from
/// files and the HTTP stack's smaller chunks, a few MiB at most.
const TEE_AHEAD: usize = 16;
/// Temp files are named `.tmp-*` so a hash can never collide with one.
const TEMP_PREFIX: &str = ".tmp-";
/// A temp file untouched this long belongs to a download that died with its
/// process; a live download writes to its file far more often.
const STALE_TEMP: Duration = Duration::from_secs(3600);
/// Where [`Cache::path_for`] points for a string that is not a sha256.
const NOT_A_HASH: &str = "not-a-sha256";

/// How this server may fetch artifacts (from the host config).
#[derive(Clone, Debug, Default)]
pub struct FetchSettings {
    /// Plain http:// (artifact URLs and the S3 endpoint) is refused unless true.
    pub allow_http: bool,
    /// Extra PEM CA certificates trusted for https and the S3 endpoint.
    pub ca_file: Option<PathBuf>,
    pub s3: Option<S3Settings>,
    /// Who is told how a download goes (a terminal line, for the commands
    /// a person watches); nobody by default.
    pub watch: Watcher,
}

/// What one transfer reports as it goes. The artifact stage only reports;
/// how it is shown (`progress::Progress` draws a line on a terminal) is
/// the caller's business.
pub trait Watch: Send {
    /// The size, once known.
    fn total(&mut self, bytes: Option<u64>);
    /// `bytes` more arrived.
    fn advanced(&mut self, bytes: u64);
    /// All of it arrived.
    fn done(&mut self);
}

/// Makes a [`Watch`] for each transfer, given its label
/// (`downloading web-1.4.0.tar.zst`).
#[derive(Clone, Default)]
pub struct Watcher(Option<Arc<MakeWatch>>);

type MakeWatch = dyn Fn(String) -> Box<dyn Watch> + Send + Sync;

impl Watcher {
    pub fn new(make: impl Fn(String) -> Box<dyn Watch> + Send + Sync + 'static) -> Watcher {
        Watcher(Some(Arc::new(make)))
    }

    fn start(&self, label: String) -> Box<dyn Watch> {
        match &self.0 {
            Some(make) => make(label),
            None => Box::new(Unwatched),
        }
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Watcher(on)"
        } else {
            "Watcher(off)"
        })
    }
}

struct Unwatched;

impl Watch for Unwatched {
    fn total(&mut self, _: Option<u64>) {}
    fn advanced(&mut self, _: u64) {}
    fn done(&mut self) {}
}

/// The host config's `storage.s3`. `Debug` leaves the secret out.
#[derive(Clone, Default)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`; None means AWS.
    pub endpoint: Option<String>,
    /// Empty means `us-east-1`.
    pub region: String,
    /// Already read from files by the caller; None falls back to `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// None falls back to `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The artifact cache: one file per artifact, named by its sha256.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// `dir` is `<state_dir>/cache`; it is created on the first fetch.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// `dir/<sha256 lowercase hex>`. A string that is not a sha256 gets a
    /// path that never holds an artifact, so it cannot point elsewhere.
    pub fn path_for(&self, sha256: &str) -> PathBuf {
        match normalize_sha256(sha256) {
            Some(hash) => self.dir.join(hash),
            None => self.dir.join(NOT_A_HASH),
        }
    }

    pub fn contains(&self, sha256: &str) -> bool {
        normalize_sha256(sha256).is_some()
            && fs::symlink_metadata(self.path_for(sha256)).is_ok_and(|m| m.is_file())
    }

    /// Streams `url` (file://, https://, http:// only if allow_http,
    /// s3://bucket/key) into a temp file in the cache dir, hashing while
    /// streaming; on a matching sha256 fsyncs and renames it to
    /// `path_for(sha256)` and returns that path. Already cached => returns at
    /// once without any network access (the URL is still checked, so a URL
    /// this server may not use fails the same way cached or not). Mismatch =>
    /// the temp file is removed and `ChecksumMismatch` names the URL, expected
    /// and actual hash. Dropping the future removes the temp file too.
    pub async fn fetch(
        &self,
        url: &str,
        sha256: &str,
        settings: &FetchSettings,
    ) -> Result<PathBuf, ArtifactError> {
        Ok(self.get(url, sha256, settings, None).await?.0)
    }

    /// [`Cache::fetch`], and [`unpack`] into `dest` while the bytes arrive
    /// rather than after, so downloading, hashing, decompressing and writing
    /// files all overlap. The unpack reads bytes not yet verified, which it
    /// is built for (it treats every archive as hostile anyway); what it
    /// wrote is removed unless the whole download then hashes to `sha256`,
    /// and on a mismatch the error is the mismatch, whatever the unpack said.
    /// A cached artifact is unpacked from the cache. On any error `dest` no
    /// longer exists when this returns.
    pub async fn fetch_and_unpack(
        &self,
        url: &str,
        sha256: &str,
        settings: &FetchSettings,
        dest: &Path,
        limits: &UnpackLimits,
    ) -> Result<(PathBuf, UnpackStats), ArtifactError> {
        let target = (dest.to_path_buf(), limits.clone());
        let (path, stats) = self.get(url, sha256, settings, Some(target)).await?;
        let stats = stats.ok_or_else(|| ArtifactError::Io {
            context: format!("cannot unpack into {}", dest.display()),
            error: io::Error::other("the unpack did not run"),
        })?;
        Ok((path, stats))
    }

    async fn get(
        &self,
        url: &str,
        sha256: &str,
        settings: &FetchSettings,
        unpack_into: Option<(PathBuf, UnpackLimits)>,
    ) -> Result<(PathBuf, Option<UnpackStats>), ArtifactError> {
        let shown = crate::redact::url(url);
        let expected = normalize_sha256(sha256).ok_or_else(|| ArtifactError::BadSha256 {
            value: sha256.to_string(),
        })?;
        let source = Source::parse(url, &shown, settings)?;
        let path = self.dir.join(&expected);
        if tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| m.is_file())
        {
            let stats = match unpack_into {
                None => None,
                Some((dest, limits)) => {
                    let archive = path.clone();
                    Some(
                        tokio::task::spawn_blocking(move || unpack(&archive, &dest, &limits))
                            .await
                            .map_err(|e| ArtifactError::Io {
                                context: format!("cannot unpack {}", path.display()),
                                error: io::Error::other(e),
                            })??,
                    )
                }
            };
            return Ok((path, stats));
        }

        let cache_error = format!("cannot write to the artifact cache {}", self.dir.display());
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(ArtifactError::io(cache_error.clone()))?;
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(ArtifactError::io(cache_error.clone()))?;
        let file = temp
            .as_file()
            .try_clone()
            .map_err(ArtifactError::io(cache_error.clone()))?;
        let name = shown.rsplit('/').next().unwrap_or(&shown).to_string();
        let mut sink = Sink {
            file: tokio::fs::File::from_std(file),
            hash: Sha256Stream::default(),
            context: cache_error.clone(),
            progress: settings.watch.start(format!("downloading {name}")),
            limit: u64::MAX,
            tee: None,
        };
        let mut unpacking = None;
        let unpack_dest = unpack_into.as_ref().map(|(dest, _)| dest.clone());
        if let Some((dest, limits)) = unpack_into {
            let (tx, rx) = tokio::sync::mpsc::channel(TEE_AHEAD);
            sink.tee = Some(tx);
            let stream = downloaded(rx);
            let source_name = shown.clone();
            unpacking = Some(tokio::task::spawn_blocking(move || {
                unpack_reader(stream, &source_name, &dest, &limits)
            }));
        }
        let downloaded = match source {
            Source::File(file) => from_file(&file, &shown, &mut sink).await,
            Source::Http(url) => from_http(url, &shown, settings, &mut sink).await,
            Source::S3 { bucket, key } => from_s3(&bucket, &key, &shown, settings, &mut sink).await,
        };
        sink.progress.done();
        if downloaded.is_ok()
            && let Some(tee) = sink.tee.take()
        {
            // The unpack may have stopped already (a refused archive); then
            // nobody listens, which is fine.
            let _ = tee.send(Tee::End).await;
        }
        let Sink {
            mut file,
            hash,
            tee,
            ..
        } = sink;
        // Without `End`, the unpack sees the download break off, fails, and
        // removes what it wrote; it has finished once `unpacked` is known.
        drop(tee);
        let unpacked = match unpacking {
            None => None,
            Some(task) => Some(task.await.map_err(|e| ArtifactError::Io {
                context: format!("cannot unpack {shown}"),
                error: io::Error::other(e),
            })),
        };
        let stored = async {
            downloaded?;
            let actual = hash.finish();
            if actual != expected {
                // Dropping `temp` removes the file.
                return Err(ArtifactError::ChecksumMismatch {
                    url: shown.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
            file.flush()
                .await
                .map_err(ArtifactError::io(cache_error.clone()))?;
            // Cheap after the unpack's syncfs when the cache shares its file system.
            file.sync_all()
                .await
                .map_err(ArtifactError::io(cache_error.clone()))?;
            drop(file);
            let (dir, dest) = (self.dir.clone(), path.clone());
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                temp.persist(&dest).map_err(|e| e.error)?;
                fs::File::open(&dir)?.sync_all()
            })
            .await
            .map_err(|e| ArtifactError::Io {
                context: cache_error.clone(),
                error: io::Error::other(e),
            })?
            .map_err(ArtifactError::io(cache_error.clone()))
        }
        .await;
        match (stored, unpacked) {
            (Ok(()), None) => Ok((path, None)),
            (Ok(()), Some(unpacked)) => Ok((path, Some(unpacked??))),
            (Err(e), unpacked) => {
                // An unpack that succeeded on bytes that are not the
                // artifact's (or not stored) is taken back.
                if let (Some(Ok(Ok(_))), Some(dest)) = (unpacked, unpack_dest) {
                    let _ = tokio::task::spawn_blocking(move || remove_unpacked(&dest)).await;
                }
                Err(e)
            }
        }
    }

    /// Removes cached artifacts whose hash is not in `keep`, and temp files
    /// left by downloads that died (untouched for an hour; a younger one may
    /// belong to a download in progress). Files that are neither are not
    /// ours and are left alone.
    pub fn prune(&self, keep: &HashSet<String>) -> io::Result<()> {
        let keep: HashSet<String> = keep.iter().filter_map(|k| normalize_sha256(k)).collect();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let remove = if normalize_sha256(name).as_deref() == Some(name) {
                !keep.contains(name)
            } else if name.starts_with(TEMP_PREFIX) {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok());
                age.is_some_and(|age| age > STALE_TEMP)
            } else {
                false
            };
            if remove {
                match fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Fetches a small file of unknown hash (a `.minisig`), from the same
/// schemes and with the same rules as an artifact, into memory; more than
/// `limit` bytes is an error.
pub async fn fetch_small(
    url: &str,
    settings: &FetchSettings,
    limit: u64,
) -> Result<Vec<u8>, ArtifactError> {
    let shown = crate::redact::url(url);
    let source = Source::parse(url, &shown, settings)?;
    let context = "cannot write a temporary file".to_string();
    let temp = tempfile::tempfile().map_err(ArtifactError::io(context.clone()))?;
    let reader = temp
        .try_clone()
        .map_err(ArtifactError::io(context.clone()))?;
    let mut sink = Sink {
        file: tokio::fs::File::from_std(temp),
        hash: Sha256Stream::default(),
        context: context.clone(),
        progress: settings.watch.start("downloading the signature".into()),
        limit,
        tee: None,
    };
    match source {
        Source::File(file) => from_file(&file, &shown, &mut sink).await?,
        Source::Http(url) => from_http(url, &shown, settings, &mut sink).await?,
        Source::S3 { bucket, key } => from_s3(&bucket, &key, &shown, settings, &mut sink).await?,
    }
    sink.file
        .flush()
        .await
        .map_err(ArtifactError::io(context.clone()))?;
    drop(sink);
    let mut reader = reader;
    io::Seek::rewind(&mut reader).map_err(ArtifactError::io(context.clone()))?;
    let mut out = Vec::new();
    io::Read::read_to_end(&mut reader, &mut out).map_err(ArtifactError::io(context))?;
    Ok(out)
}

/// A URL, checked against this server's settings, before any I/O.
enum Source {
    File(PathBuf),
    Http(Url),
    S3 { bucket: String, key: ObjectPath },
}

impl Source {
    fn parse(url: &str, shown: &str, settings: &FetchSettings) -> Result<Source, ArtifactError> {
        let refuse = |reason: &str| ArtifactError::BadUrl {
            url: shown.to_string(),
            reason: reason.to_string(),
        };
        let parsed =
            Url::parse(url).map_err(|e| refuse(&format!("it is not a valid URL ({e})")))?;
        match parsed.scheme() {
            "file" => {
                if !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
                    return Err(refuse("a file:// URL must name a local path"));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|()| refuse("it does not name a local file"))?;
                Ok(Source::File(path))
            }
            "https" => Ok(Source::Http(parsed)),
            "http" if settings.allow_http => Ok(Source::Http(parsed)),
            "http" => Err(refuse(
                "plain http is refused unless allow_http is true in the host config",
            )),
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default();
                let key = parsed.path().trim_start_matches('/');
                if bucket.is_empty() || key.is_empty() {
                    return Err(refuse("an s3:// URL must be s3://bucket/key"));
                }
                let key = ObjectPath::from_url_path(key)
                    .map_err(|e| refuse(&format!("its object key is not valid ({e})")))?;
                Ok(Source::S3 {
                    bucket: bucket.to_string(),
                    key,
                })
            }
            other => Err(refuse(&format!(
                "the scheme {other}: is not supported (use s3://, https:// or file://)"
            ))),
        }
    }
}

/// The temp file being filled, and the hash of what went into it.
struct Sink {
    file: tokio::fs::File,
    hash: Sha256Stream,
    context: String,
    /// Told how the download goes.
    progress: Box<dyn Watch>,
    /// Most bytes accepted (u64::MAX for artifacts; small for signatures).
    limit: u64,
    /// Where the bytes also go when they are unpacked as they arrive; None
    /// once the unpack stopped reading.
    tee: Option<tokio::sync::mpsc::Sender<Tee>>,
}

/// What the download hands the unpack: bytes, then `End` once all of them
/// arrived. A channel closed without `End` is a download that broke off.
enum Tee {
    Bytes(Vec<u8>),
    End,
}

/// The unpack's side of [`Tee`]: a blocking reader over the downloaded bytes.
fn downloaded(mut from: tokio::sync::mpsc::Receiver<Tee>) -> impl io::Read + Send {
    Chunks::new(move |_used: Vec<u8>| match from.blocking_recv() {
        Some(Tee::Bytes(next)) => Ok(Some(next)),
        Some(Tee::End) => Ok(None),
        None => Err(io::Error::other("the download broke off")),
    })
}

impl Sink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        if self.hash.bytes().saturating_add(chunk.len() as u64) > self.limit {
            return Err(ArtifactError::TooLarge {
                detail: format!("the download is over {} bytes", self.limit),
            });
        }
        self.hash.update(chunk);
        self.progress.advanced(chunk.len() as u64);
        if let Some(tee) = &self.tee
            && tee.send(Tee::Bytes(chunk.to_vec())).await.is_err()
        {
            self.tee = None;
        }
        self.file
            .write_all(chunk)
            .await
            .map_err(|error| ArtifactError::Io {
                context: self.context.clone(),
                error,
            })
    }
}

async fn from_file(path: &Path, shown: &str, sink: &mut Sink) -> Result<(), ArtifactError> {
    let source_error = |error: io::Error| match error.kind() {
        io::ErrorKind::NotFound => ArtifactError::NotFound {
            url: shown.to_string(),
        },
        io::ErrorKind::PermissionDenied => ArtifactError::AccessDenied {
            url: shown.to_string(),
            detail: error.to_string(),
        },
        _ => ArtifactError::Io {
            context: format!("cannot read {shown}"),
            error,
        },
    };
    let mut file = tokio::fs::File::open(path).await.map_err(source_error)?;
    let meta = file.metadata().await.map_err(source_error)?;
    sink.progress.total(Some(meta.len()));
    if meta.is_dir() {
        return Err(ArtifactError::BadUrl {
            url: shown.to_string(),
            reason: "it names a directory, not a file".into(),
        });
    }
    let mut buf = vec![0; BUFFER];
    loop {
        let n = file.read(&mut buf).await.map_err(source_error)?;
        if n == 0 {
            return Ok(());
        }
        sink.write(&buf[..n]).await?;
    }
}

/// Why the redirect policy stopped following, found again in the error chain.
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

fn http_client(settings: &FetchSettings, shown: &str) -> Result<reqwest::Client, ArtifactError> {
    let allow_http = settings.allow_http;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let scheme = attempt.url().scheme();
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error(RedirectRefused(format!(
                "it redirects more than {MAX_REDIRECTS} times"
            )))
        } else if scheme == "https" || (scheme == "http" && allow_http) {
            attempt.follow()
        } else {
            let reason = if scheme == "http" {
                format!(
                    "it redirects to {}, and plain http is refused unless allow_http is true \
                     in the host config",
                    crate::redact::url(attempt.url().as_str())
                )
            } else {
                format!(
                    "it redirects to {}, and only https:// redirects are followed",
                    crate::redact::url(attempt.url().as_str())
                )
            };
            attempt.error(RedirectRefused(reason))
        }
    });
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(policy)
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = read_ca_file(settings, shown)? {
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad_ca_file(settings, shown, &error_chain(&e)))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(|e| ArtifactError::Settings {
        url: shown.to_string(),
        reason: format!("the HTTP client cannot be set up ({})", error_chain(&e)),
    })
}

async fn from_http(
    url: Url,
    shown: &str,
    settings: &FetchSettings,
    sink: &mut Sink,
) -> Result<(), ArtifactError> {
    let client = http_client(settings, shown)?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| http_error(e, shown))?;
    let status = response.status();
    if !status.is_success() {
        let url = shown.to_string();
        return Err(match status.as_u16() {
            404 | 410 => ArtifactError::NotFound { url },
            401 | 403 => ArtifactError::AccessDenied {
                url,
                detail: format!("HTTP status {status}"),
            },
            status => ArtifactError::HttpStatus { url, status },
        });
    }
    let announced = response.content_length();
    sink.progress.total(announced);
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(e, shown))? {
        sink.write(&chunk).await?;
    }
    match announced {
        // hyper already fails a short body; this guards the guarantee.
        Some(expected) if sink.hash.bytes() != expected => Err(ArtifactError::Truncated {
            url: shown.to_string(),
            received: sink.hash.bytes(),
            expected,
        }),
        _ => Ok(()),
    }
}

fn http_error(error: reqwest::Error, shown: &str) -> ArtifactError {
    let url = shown.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RedirectRefused>() {
            return ArtifactError::BadUrl {
                url,
                reason: refused.0.clone(),
            };
        }
        source = e.source();
    }
    if error.is_builder() {
        return ArtifactError::BadUrl {
            url,
            reason: error_chain(&error.without_url()),
        };
    }
    let detail = if error.is_timeout() {
        format!("timed out ({})", error_chain(&error.without_url()))
    } else {
        error_chain(&error.without_url())
    };
    ArtifactError::Network { url, detail }
}

fn read_ca_file(settings: &FetchSettings, shown: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
    let Some(path) = &settings.ca_file else {
        return Ok(None);
    };
    let pem = fs::read(path).map_err(|e| bad_ca_file(settings, shown, &e.to_string()))?;
    Ok(Some(pem))
}

fn bad_ca_file(settings: &FetchSettings, shown: &str, why: &str) -> ArtifactError {
    let file = settings
        .ca_file
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    ArtifactError::Settings {
        url: shown.to_string(),
        reason: format!("the ca_file {file} cannot be used ({why})"),
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(crate) fn s3_store(
    bucket: &str,
    settings: &FetchSettings,
    shown: &str,
) -> Result<AmazonS3, ArtifactError> {
    let refuse = |reason: String| ArtifactError::Settings {
        url: shown.to_string(),
        reason,
    };
    let Some(s3) = &settings.s3 else {
        return Err(refuse(
            "the host config has no storage.s3 section for s3:// URLs".into(),
        ));
    };
    let mut options = ClientOptions::new()
        .with_allow_http(settings.allow_http)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout_disabled()
        .with_read_timeout(READ_TIMEOUT);
    if let Some(pem) = read_ca_file(settings, shown)? {
        let certs = object_store::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad_ca_file(settings, shown, &error_chain(&e)))?;
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    let region = if s3.region.is_empty() {
        "us-east-1"
    } else {
        &s3.region
    };
    let mut builder = AmazonS3Builder::new()
        .with_client_options(options)
        .with_allow_http(settings.allow_http)
        .with_bucket_name(bucket)
        .with_region(region)
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &s3.endpoint {
        let plain = endpoint
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if plain && !settings.allow_http {
            return Err(refuse(format!(
                "the S3 endpoint {} is plain http, which is refused unless allow_http is true",
                crate::redact::url(endpoint)
            )));
        }
        // Self-hosted stores (MinIO, Garage, Ceph) want path-style requests.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false);
    }
    let from_config = s3.access_key_id.is_some() || s3.secret_access_key.is_some();
    let key_id = s3
        .access_key_id
        .clone()
        .or_else(|| env_var("AWS_ACCESS_KEY_ID"));
    let secret = s3
        .secret_access_key
        .clone()
        .or_else(|| env_var("AWS_SECRET_ACCESS_KEY"));
    match (key_id, secret) {
        (Some(id), Some(secret)) => {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            if !from_config && let Some(token) = env_var("AWS_SESSION_TOKEN") {
                builder = builder.with_token(token);
            }
        }
        // No credentials for a self-hosted store: a public bucket, read unsigned.
        (None, None) if s3.endpoint.is_some() => builder = builder.with_skip_signature(true),
        // No credentials on AWS: object_store's instance (IMDS) credentials.
        (None, None) => {}
        _ => {
            return Err(refuse(
                "only one of the S3 access key id and secret access key is set \
                 (storage.s3 in the host config, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
    }
    builder.build().map_err(|e| {
        refuse(format!(
            "the S3 client cannot be set up ({})",
            error_chain(&e)
        ))
    })
}

async fn from_s3(
    bucket: &str,
    key: &ObjectPath,
    shown: &str,
    settings: &FetchSettings,
    sink: &mut Sink,
) -> Result<(), ArtifactError> {
    let store = s3_store(bucket, settings, shown)?;
    let result = store.get(key).await.map_err(|e| s3_error(e, shown))?;
    let expected = result.range.end - result.range.start;
    sink.progress.total(Some(expected));
    let mut stream = result.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| s3_error(e, shown))?;
        sink.write(&chunk).await?;
    }
    if sink.hash.bytes() != expected {
        return Err(ArtifactError::Truncated {
            url: shown.to_string(),
            received: sink.hash.bytes(),
            expected,
        });
    }
    Ok(())
}

fn s3_error(error: object_store::Error, shown: &str) -> ArtifactError {
    let url = shown.to_string();
    match error {
        object_store::Error::NotFound { .. } => ArtifactError::NotFound { url },
        object_store::Error::PermissionDenied { source, .. }
        | object_store::Error::Unauthenticated { source, .. } => ArtifactError::AccessDenied {
            url,
            detail: s3_denial(&error_chain(source.as_ref())),
        },
        other => ArtifactError::Network {
            url,
            detail: s3_detail(&error_chain(&other)),
        },
    }
}

/// The text between the first `open` and the next `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

/// Why S3 said no, in words, from the error code in its XML answer; the
/// answer itself (a dump) is never shown.
fn s3_denial(chain: &str) -> String {
    let code = between(chain, "<Code>", "</Code>").unwrap_or("");
    let why = match code {
        "SignatureDoesNotMatch" => "the secret access key does not match the access key id",
        "InvalidAccessKeyId" | "NotSignedUp" => "the access key id is unknown to the server",
        "ExpiredToken" | "TokenRefreshRequired" => "the session token has expired",
        "AccessDenied" | "AllAccessDisabled" => "these credentials may not read this object",
        "RequestTimeTooSkewed" => "this server's clock is too far off the S3 server's",
        _ => "the credentials were refused",
    };
    let code = if code.is_empty() {
        String::new()
    } else {
        format!(" ({code})")
    };
    format!(
        "{why}{code}; check storage.s3's access_key_id_file and secret_access_key_file \
         (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )
}

/// object_store's message without the XML body it quotes: the S3 error
/// code is kept, the rest of the answer is not.
fn s3_detail(chain: &str) -> String {
    match chain.find("<?xml").or_else(|| chain.find("<Error>")) {
        Some(at) => {
            let head = chain[..at].trim_end_matches([' ', ':']);
            match between(chain, "<Code>", "</Code>") {
                Some(code) => format!("{head} ({code})"),
                None => head.to_string(),
            }
        }
        None => chain.to_string(),
    }
}

/// An error and its causes on one line, skipping causes whose text the
/// message already contains.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests;
