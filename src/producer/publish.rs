//! `hoist publish`: the producer side, run by a release pipeline (CI). Packs
//! a build directory reproducibly, uploads it to the store the servers fetch
//! from, and points a manifest at it.
//!
//! The order is chosen so that a failure at any step leaves nothing that
//! points at a missing or half-written artifact: the manifest edit is worked
//! out first (so a manifest hoist cannot rewrite fails before any upload),
//! the upload finishes before the manifest is written, and both the file://
//! upload and the manifest write are a temp file + rename.
//!
//! An artifact URL is immutable once published: a server that cached the
//! release by its sha256 and one that downloads it later must get the same
//! bytes. So an existing object with the same content is left alone (running
//! the same CI job twice is fine), and one with other content is refused.
//!
//! Where the artifact goes (`--to`):
//! - a full URL (`s3://bucket/web/web-1.4.0.tar.zst`, `file:///srv/store/x.tar.zst`)
//!   is used as it is;
//! - a prefix ending in `/` gets `<dirname>-<release>.tar.zst` appended, where
//!   `<dirname>` is the last component of DIR (after resolving `.` and `..`)
//!   and `<release>` is `--release`, which is then required.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use reqwest::Url;

use crate::artifact::{self, ArtifactError, Cache, FetchSettings, S3Settings};
use crate::config::HostConfig;
use crate::progress::Progress;

/// Files larger than this go up in parts (S3 refuses single PUTs over 5 GiB,
/// and parts can be retried one by one).
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARALLEL_PARTS: usize = 4;

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub url: String,
    pub sha256: String,
    /// false when the same bytes were already at `url`.
    pub uploaded: bool,
}

/// `hoist publish DIR --to URL [--manifest FILE --release NAME]`. Prints
/// `<sha256>  <url>` on stdout (the same shape as `hoist pack`), then what
/// it changed in the manifest.
pub async fn publish(
    config: &Path,
    dir: &Path,
    to: &str,
    manifest: Option<&Path>,
    release: Option<&str>,
) -> Result<(), String> {
    let p = run(config, dir, to, manifest, release).await?;
    println!("{}  {}", p.sha256, crate::redact::url(&p.url));
    if !p.uploaded {
        eprintln!("hoist: the same artifact was already published there; nothing uploaded");
    }
    if let (Some(m), Some(r)) = (manifest, release) {
        println!("{}: release {r}", m.display());
    }
    Ok(())
}

/// Everything `publish` does, without printing.
pub async fn run(
    config: &Path,
    dir: &Path,
    to: &str,
    manifest: Option<&Path>,
    release: Option<&str>,
) -> Result<Published, String> {
    if manifest.is_some() && release.is_none() {
        return Err("--manifest needs --release: the release name to write into it".into());
    }
    if let Some(r) = release {
        crate::config::ReleaseName::new(r).map_err(|m| format!("--release: {m}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let url = destination(to, &dir_name(dir)?, release)?;
    let target = Target::parse(&url)?;
    let settings = match &target {
        Target::S3 { .. } => s3_settings(config)?,
        Target::File(_) => FetchSettings::default(),
    };

    // The manifest is read before anything is uploaded, so that a manifest
    // that cannot be rewritten stops the publish early. Its new text is
    // completed once the sha256 is known.
    let manifest_text = match manifest {
        Some(m) => Some(
            std::fs::read_to_string(m).map_err(|e| format!("cannot read {}: {e}", m.display()))?,
        ),
        None => None,
    };

    let work = tempfile::Builder::new()
        .prefix("hoist-publish-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let packed = work.path().join("artifact.tar.zst");
    let sha256 = {
        let (d, o) = (dir.to_path_buf(), packed.clone());
        tokio::task::spawn_blocking(move || super::pack(&d, &o))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };

    let new_manifest = match (&manifest_text, manifest, release) {
        (Some(text), Some(m), Some(r)) => Some(
            super::manifest_edit::set_release(text, r, &url, &sha256)
                .map_err(|e| format!("{}: {e}", m.display()))?,
        ),
        _ => None,
    };

    let uploaded = match already_there(&url, &sha256, &settings, work.path()).await? {
        true => false,
        false => {
            match &target {
                Target::File(path) => upload_file(&packed, path).await?,
                Target::S3 { bucket, key } => {
                    upload_s3(&packed, bucket, key, &url, &settings).await?;
                }
            }
            true
        }
    };

    if let (Some(text), Some(m)) = (new_manifest, manifest) {
        crate::fsutil::write_atomic(m, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", m.display()))?;
    }
    Ok(Published {
        url,
        sha256,
        uploaded,
    })
}

/// The artifact URL for `--to`: used as it is, or, for a prefix ending in
/// `/`, with `<dir_name>-<release>.tar.zst` appended.
pub fn destination(to: &str, dir_name: &str, release: Option<&str>) -> Result<String, String> {
    if !(to.starts_with("file://") || to.starts_with("s3://")) {
        return Err(format!(
            "--to {} is not a file:// or s3:// URL",
            crate::redact::url(to)
        ));
    }
    if !to.ends_with('/') {
        return Ok(to.to_string());
    }
    let Some(release) = release else {
        return Err(format!(
            "--to {to} ends with '/', so the file name is <dir>-<release>.tar.zst and --release is needed"
        ));
    };
    let name = format!("{dir_name}-{release}.tar.zst");
    let url = format!("{to}{name}");
    // The name must add one plain file under the prefix: a DIR whose name
    // holds '/', '%' (percent-decoded into a '/') or URL syntax would
    // otherwise move it elsewhere.
    let plain = !name.starts_with('.')
        && !name
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '%' | '?' | '#') || c.is_control());
    let inside = plain
        && match (Target::parse(to), Target::parse(&url)) {
            (Ok(Target::File(dir)), Ok(Target::File(file))) => {
                file.parent() == Some(dir.as_path())
                    && file.file_name() == Some(std::ffi::OsStr::new(&name))
            }
            (
                Ok(Target::S3 {
                    bucket: b1,
                    key: prefix,
                }),
                Ok(Target::S3 { bucket: b2, key }),
            ) => b1 == b2 && key.as_ref() == format!("{}/{name}", prefix.as_ref()),
            // A bucket's top: s3://bucket/ has no key to be under.
            (Err(_), Ok(Target::S3 { key, .. })) => key.as_ref() == name,
            _ => false,
        };
    if !inside {
        return Err(format!(
            "{name:?} is not a plain file name under --to {}; name DIR differently or give --to the artifact's full URL",
            crate::redact::url(to)
        ));
    }
    Ok(url)
}

fn dir_name(dir: &Path) -> Result<String, String> {
    let full = dir
        .canonicalize()
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    full.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} has no name to build the file name from", dir.display()))
}

fn file_label(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

enum Target {
    File(PathBuf),
    S3 { bucket: String, key: ObjectPath },
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let shown = crate::redact::url(url);
        let parsed = Url::parse(url).map_err(|e| format!("{shown} is not a valid URL ({e})"))?;
        match parsed.scheme() {
            "file" => {
                if !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
                    return Err(format!("{shown}: a file:// URL must name a local path"));
                }
                let path = parsed
                    .to_file_path()
                    .map_err(|()| format!("{shown} does not name a local file"))?;
                Ok(Target::File(path))
            }
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default().to_string();
                let key = parsed.path().trim_start_matches('/');
                if bucket.is_empty() || key.is_empty() {
                    return Err(format!("{shown}: an s3:// URL must be s3://bucket/key"));
                }
                let key = ObjectPath::from_url_path(key)
                    .map_err(|e| format!("{shown}: the object key is not valid ({e})"))?;
                Ok(Target::S3 { bucket, key })
            }
            _ => Err(format!("{shown} is not a file:// or s3:// URL")),
        }
    }
}

/// S3 settings from the host config when there is one (a server publishing
/// for itself, or a CI runner with a config file), else from the
/// environment: `AWS_ENDPOINT_URL`, `AWS_REGION` (or `AWS_DEFAULT_REGION`),
/// `AWS_ALLOW_HTTP=true`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`.
fn s3_settings(config: &Path) -> Result<FetchSettings, String> {
    if config.exists() {
        let cfg = HostConfig::load(config).map_err(|e| e.to_string())?;
        let read = |p: &Option<PathBuf>, key: &str| -> Result<Option<String>, String> {
            match p {
                None => Ok(None),
                Some(p) => std::fs::read_to_string(p)
                    .map(|s| Some(s.trim().to_string()))
                    .map_err(|e| format!("cannot read {key} {}: {e}", p.display())),
            }
        };
        let s3 = match &cfg.storage.s3 {
            Some(s) => Some(S3Settings {
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                access_key_id: read(&s.access_key_id_file, "storage.s3.access_key_id_file")?,
                secret_access_key: read(
                    &s.secret_access_key_file,
                    "storage.s3.secret_access_key_file",
                )?,
            }),
            None => Some(S3Settings::default()),
        };
        return Ok(FetchSettings {
            allow_http: cfg.allow_http,
            ca_file: cfg.ca_file.clone(),
            s3,
            ..FetchSettings::default()
        });
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Ok(FetchSettings {
        allow_http: env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ca_file: None,
        s3: Some(S3Settings {
            endpoint: env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_default(),
            // None: the S3 client reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
            access_key_id: None,
            secret_access_key: None,
        }),
        ..FetchSettings::default()
    })
}

/// Whether `url` already holds exactly these bytes. Other content there is
/// an error: a published artifact is never replaced.
async fn already_there(
    url: &str,
    sha256: &str,
    settings: &FetchSettings,
    scratch: &Path,
) -> Result<bool, String> {
    let cache = Cache::new(scratch.join("existing"));
    match cache.fetch(url, sha256, settings).await {
        Ok(_) => Ok(true),
        Err(ArtifactError::NotFound { .. }) => Ok(false),
        Err(ArtifactError::ChecksumMismatch { url, actual, .. }) => Err(format!(
            "{url} already exists with other content (sha256 {actual}); \
             an artifact is never replaced: publish under a new release name"
        )),
        // A CI key may be allowed to write but not to read: upload anyway.
        Err(ArtifactError::AccessDenied { .. }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Copies `src` to `dest` through a temp file beside it and a rename, so
/// that a server never fetches a half-written artifact.
async fn upload_file(src: &Path, dest: &Path) -> Result<(), String> {
    let (src, dest) = (src.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let fail = |e: std::io::Error| format!("cannot write {}: {e}", dest.display());
        std::fs::create_dir_all(&parent).map_err(fail)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".hoist-upload-")
            .tempfile_in(&parent)
            .map_err(fail)?;
        let mut from =
            std::fs::File::open(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let total = from.metadata().map(|m| m.len()).ok();
        let mut progress = Progress::new(format!("uploading {}", file_label(&dest)), total);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("cannot read {}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            tmp.as_file_mut().write_all(&buf[..n]).map_err(fail)?;
            progress.add(n as u64);
        }
        progress.finish();
        tmp.as_file().sync_all().map_err(fail)?;
        tmp.persist(&dest).map_err(|e| fail(e.error))?;
        crate::fsutil::sync_dir(&parent).map_err(fail)
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn upload_s3(
    src: &Path,
    bucket: &str,
    key: &ObjectPath,
    url: &str,
    settings: &FetchSettings,
) -> Result<(), String> {
    let shown = crate::redact::url(url);
    let store = artifact::s3_store(bucket, settings, &shown).map_err(|e| e.to_string())?;
    let fail = |e: object_store::Error| format!("uploading to {shown} failed: {e}");
    let size = std::fs::metadata(src)
        .map_err(|e| format!("cannot read {}: {e}", src.display()))?
        .len();
    let mut progress = Progress::new(
        format!("uploading {}", file_label(Path::new(key.as_ref()))),
        Some(size),
    );
    if size <= MULTIPART_THRESHOLD {
        let bytes =
            std::fs::read(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        store.put(key, bytes.into()).await.map_err(fail)?;
        progress.add(size);
        progress.finish();
        return Ok(());
    }
    let upload = store.put_multipart(key).await.map_err(fail)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut file =
        std::fs::File::open(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(format!("cannot read {}: {e}", src.display()));
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = writer.wait_for_capacity(PARALLEL_PARTS).await {
            return Err(fail(e));
        }
        writer.write(&buf[..n]);
        // Counted when handed to the uploader; parts go up in the background.
        progress.add(n as u64);
    }
    writer.finish().await.map_err(fail)?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_is_used_as_it_is() {
        assert_eq!(
            destination("s3://b/web/web-1.tar.zst", "build", Some("1")).unwrap(),
            "s3://b/web/web-1.tar.zst"
        );
        assert_eq!(
            destination("file:///srv/store/x.tar.zst", "build", None).unwrap(),
            "file:///srv/store/x.tar.zst"
        );
    }

    #[test]
    fn a_prefix_gets_dir_and_release_appended() {
        assert_eq!(
            destination("s3://b/web/", "web", Some("2026.11.27-3")).unwrap(),
            "s3://b/web/web-2026.11.27-3.tar.zst"
        );
        let err = destination("s3://b/web/", "web", None).unwrap_err();
        assert!(err.contains("--release is needed"), "{err}");
    }

    #[test]
    fn nothing_lands_outside_the_prefix() {
        assert_eq!(
            destination("file:///srv/pub/", "web", Some("1.0")).unwrap(),
            "file:///srv/pub/web-1.0.tar.zst"
        );
        assert_eq!(
            destination("s3://b/", "web", Some("1.0")).unwrap(),
            "s3://b/web-1.0.tar.zst"
        );
        for (dir, release) in [
            ("web", "../../../escaped"),
            ("web", "../x"),
            ("a%2F..%2F..%2Fb", "1"),
            ("web", "1?x=1"),
            ("web", "1#frag"),
        ] {
            for to in ["file:///srv/pub/", "s3://b/pub/"] {
                let e = destination(to, dir, Some(release)).unwrap_err();
                assert!(
                    e.contains("not a plain file name"),
                    "{to} {dir} {release}: {e}"
                );
            }
        }
    }

    #[test]
    fn only_file_and_s3_urls_are_accepted() {
        let err = destination("https://user:pw@example.com/x.tar.zst", "web", None).unwrap_err();
        assert!(err.contains("not a file:// or s3:// URL"), "{err}");
        assert!(!err.contains("pw"), "credentials leaked: {err}");
    }
}
