//! Downloading artifacts into a content-addressed cache.
//!
//! The cache is `<state_dir>/cache/<sha256>`: a file only gets that name by
//! a rename after its bytes were hashed while streaming and matched, so a
//! cached name is proof of content. Nothing is ever held whole in memory:
//! every source (file://, http(s)://, s3://) is a stream of chunks written to
//! a temp file beside its final name.

use super::ArtifactError;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug, Default)]
pub struct FetchSettings {
    /// Plain http:// is refused unless true.
    pub allow_http: bool,
    /// Extra PEM CA certificates trusted for https and the S3 endpoint.
    pub ca_file: Option<PathBuf>,
    pub s3: Option<S3Settings>,
}

#[derive(Clone, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

pub struct Cache {
    dir: PathBuf,
}

const TIMEOUT: Duration = Duration::from_secs(300);

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    pub fn path_for(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256.to_ascii_lowercase())
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.path_for(sha256).is_file()
    }

    /// Streams `url` into the cache, checking its sha256 on the way; see the
    /// module docs. Already cached: returns at once, without network access.
    pub async fn fetch(
        &self,
        url: &str,
        sha256: &str,
        settings: &FetchSettings,
    ) -> Result<PathBuf, ArtifactError> {
        let want = sha256.to_ascii_lowercase();
        if want.len() != 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArtifactError::BadSha256 {
                value: sha256.into(),
            });
        }
        let dest = self.path_for(&want);
        if dest.is_file() {
            return Ok(dest);
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(ArtifactError::io(format!(
                "cannot create the cache {}",
                self.dir.display()
            )))?;
        let shown = crate::redact::url(url);
        let tmp = self
            .dir
            .join(format!(".partial-{want}-{:08x}", rand::random::<u32>()));
        let result = self.download(url, &shown, &tmp, settings).await;
        let (actual, _len) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if actual != want {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ArtifactError::ChecksumMismatch {
                url: shown,
                expected: want,
                actual,
            });
        }
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(ArtifactError::io(format!(
                "cannot store {}",
                dest.display()
            )))?;
        crate::fsutil::sync_dir(&self.dir).map_err(ArtifactError::io(format!(
            "cannot sync {}",
            self.dir.display()
        )))?;
        Ok(dest)
    }

    async fn download(
        &self,
        url: &str,
        shown: &str,
        tmp: &Path,
        settings: &FetchSettings,
    ) -> Result<(String, u64), ArtifactError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(ArtifactError::io(format!(
                "cannot create {}",
                tmp.display()
            )))?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut sink = |chunk: &[u8]| {
            hasher.update(chunk);
            written += chunk.len() as u64;
        };
        let write_err = || ArtifactError::io(format!("cannot write {}", tmp.display()));
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => ArtifactError::NotFound { url: shown.into() },
                    std::io::ErrorKind::PermissionDenied => ArtifactError::AccessDenied {
                        url: shown.into(),
                        detail: e.to_string(),
                    },
                    _ => ArtifactError::Io {
                        context: format!("cannot read {shown}"),
                        error: e,
                    },
                })?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                use tokio::io::AsyncReadExt;
                let n = f
                    .read(&mut buf)
                    .await
                    .map_err(ArtifactError::io(format!("cannot read {shown}")))?;
                if n == 0 {
                    break;
                }
                sink(&buf[..n]);
                file.write_all(&buf[..n]).await.map_err(write_err())?;
            }
        } else if url.starts_with("https://") || url.starts_with("http://") {
            if url.starts_with("http://") && !settings.allow_http {
                return Err(ArtifactError::BadUrl {
                    url: shown.into(),
                    reason: "plain http is refused unless allow_http is set".into(),
                });
            }
            let client = http_client(settings, shown)?;
            let resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| net_err(shown, &e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(match status.as_u16() {
                    404 | 410 => ArtifactError::NotFound { url: shown.into() },
                    401 | 403 => ArtifactError::AccessDenied {
                        url: shown.into(),
                        detail: format!("HTTP {}", status.as_u16()),
                    },
                    s => ArtifactError::HttpStatus {
                        url: shown.into(),
                        status: s,
                    },
                });
            }
            let expected = resp.content_length();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) =
                tokio::time::timeout(TIMEOUT, stream.next())
                    .await
                    .map_err(|_| ArtifactError::Network {
                        url: shown.into(),
                        detail: "no data for 5 minutes".into(),
                    })?
            {
                let chunk = chunk.map_err(|e| net_err(shown, &e))?;
                sink(&chunk);
                file.write_all(&chunk).await.map_err(write_err())?;
            }
            if let Some(exp) = expected
                && written != exp
            {
                return Err(ArtifactError::Truncated {
                    url: shown.into(),
                    received: written,
                    expected: exp,
                });
            }
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| ArtifactError::BadUrl {
                    url: shown.into(),
                    reason: "an s3 URL looks like s3://bucket/key".into(),
                })?;
            let store = s3_store(bucket, settings, shown)?;
            let path = object_store::path::Path::from(key);
            use object_store::ObjectStoreExt;
            let got = store
                .get(&path)
                .await
                .map_err(|e| s3_err(shown, bucket, key, e))?;
            let expected = got.meta.size;
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| s3_err(shown, bucket, key, e))?;
                sink(&chunk);
                file.write_all(&chunk).await.map_err(write_err())?;
            }
            if written != expected {
                return Err(ArtifactError::Truncated {
                    url: shown.into(),
                    received: written,
                    expected,
                });
            }
        } else {
            return Err(ArtifactError::BadUrl {
                url: shown.into(),
                reason: "use s3://, https:// or file://".into(),
            });
        }
        file.sync_all().await.map_err(write_err())?;
        drop(file);
        Ok((hex::encode(hasher.finalize()), written))
    }

    /// Removes cached artifacts (and stale partial downloads) whose hash is
    /// not in `keep`.
    pub fn prune(&self, keep: &HashSet<String>) -> std::io::Result<()> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(e.path())?;
            }
        }
        Ok(())
    }
}

fn http_client(settings: &FetchSettings, shown: &str) -> Result<reqwest::Client, ArtifactError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).map_err(|e| ArtifactError::Settings {
            url: shown.into(),
            reason: format!("cannot read ca_file {}: {e}", ca.display()),
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ArtifactError::Settings {
                url: shown.into(),
                reason: format!("ca_file {} is not PEM certificates: {e}", ca.display()),
            })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| ArtifactError::Settings {
        url: shown.into(),
        reason: e.to_string(),
    })
}

fn s3_store(
    bucket: &str,
    settings: &FetchSettings,
    shown: &str,
) -> Result<object_store::aws::AmazonS3, ArtifactError> {
    let s3 = settings.s3.clone().unwrap_or_default();
    let mut b = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(if s3.region.is_empty() {
            "us-east-1".to_string()
        } else {
            s3.region.clone()
        });
    if let Some(ep) = &s3.endpoint {
        if ep.starts_with("http://") && !settings.allow_http {
            return Err(ArtifactError::BadUrl {
                url: shown.into(),
                reason: "the S3 endpoint uses plain http and allow_http is not set".into(),
            });
        }
        b = b
            .with_endpoint(ep)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(settings.allow_http);
    }
    if let Some(k) = &s3.access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(s) = &s3.secret_access_key {
        b = b.with_secret_access_key(s);
    }
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).map_err(|e| ArtifactError::Settings {
            url: shown.into(),
            reason: format!("cannot read ca_file {}: {e}", ca.display()),
        })?;
        let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
            ArtifactError::Settings {
                url: shown.into(),
                reason: format!("ca_file {} is not PEM certificates: {e}", ca.display()),
            }
        })?;
        let mut opts = object_store::ClientOptions::new();
        for c in certs {
            opts = opts.with_root_certificate(c);
        }
        b = b.with_client_options(opts);
    }
    b.build().map_err(|e| ArtifactError::Settings {
        url: shown.into(),
        reason: first_line(&e.to_string()),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn net_err(shown: &str, e: &reqwest::Error) -> ArtifactError {
    let detail = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        // reqwest's message names the URL; show ours, without secrets, instead.
        let mut text = first_line(&e.to_string());
        if let Some(u) = e.url() {
            text = text.replace(u.as_str(), shown);
        }
        text
    };
    ArtifactError::Network {
        url: shown.into(),
        detail,
    }
}

fn s3_err(shown: &str, bucket: &str, key: &str, e: object_store::Error) -> ArtifactError {
    match e {
        object_store::Error::NotFound { .. } => ArtifactError::NotFound { url: shown.into() },
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ArtifactError::AccessDenied {
            url: shown.into(),
            detail: format!("check the S3 credentials for bucket {bucket}, key {key}"),
        },
        other => {
            let text = other.to_string();
            if text.contains("403")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("InvalidAccessKeyId")
            {
                ArtifactError::AccessDenied {
                    url: shown.into(),
                    detail: format!(
                        "the S3 server refused the credentials for bucket {bucket}, key {key}"
                    ),
                }
            } else {
                ArtifactError::Network {
                    url: shown.into(),
                    detail: first_line(&text),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[tokio::test]
    async fn file_fetch_verifies_and_caches() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.tar.zst");
        std::fs::write(&src, b"artifact bytes").unwrap();
        let cache = Cache::new(d.path().join("cache"));
        let url = format!("file://{}", src.display());
        let s = sha(b"artifact bytes");
        let p = cache
            .fetch(&url, &s, &FetchSettings::default())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"artifact bytes");
        // Cached: no access to the source at all.
        std::fs::remove_file(&src).unwrap();
        assert_eq!(
            cache
                .fetch(&url, &s, &FetchSettings::default())
                .await
                .unwrap(),
            p
        );
        // Gone and not cached: a clear not-found.
        let e = cache
            .fetch(&url, &"0".repeat(64), &FetchSettings::default())
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::NotFound { .. }), "{e}");
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn mismatch_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.tar.gz");
        std::fs::write(&src, b"x").unwrap();
        let cache = Cache::new(d.path().join("cache"));
        let e = cache
            .fetch(
                &format!("file://{}", src.display()),
                &"a".repeat(64),
                &FetchSettings::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::ChecksumMismatch { .. }), "{e}");
        assert_eq!(
            std::fs::read_dir(d.path().join("cache")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn plain_http_refused_unless_allowed() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(d.path());
        let e = cache
            .fetch(
                "http://127.0.0.1:1/a.tar.gz",
                &"a".repeat(64),
                &FetchSettings::default(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::BadUrl { .. }), "{e}");
        let e = cache
            .fetch("ftp://x/a", &"a".repeat(64), &FetchSettings::default())
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::BadUrl { .. }), "{e}");
    }

    #[test]
    fn prune_keeps_only_what_is_asked() {
        let d = tempfile::tempdir().unwrap();
        for n in ["a", "b", ".partial-c"] {
            std::fs::write(d.path().join(n), "").unwrap();
        }
        let keep: HashSet<String> = ["a".to_string()].into();
        Cache::new(d.path()).prune(&keep).unwrap();
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a")]);
    }
}
