//! Fetching from real files, and from a small HTTP server on 127.0.0.1 that
//! plays a web server or (for s3:// URLs) an S3 endpoint, recording the
//! requests it gets so their shape can be checked.

use super::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

fn sha(bytes: &[u8]) -> String {
    let mut s = Sha256Stream::default();
    s.update(bytes);
    s.finish()
}

fn cache_in(tmp: &tempfile::TempDir, name: &str) -> Cache {
    Cache::new(tmp.path().join(name))
}

/// The names in the cache directory (none if it does not exist).
fn cache_files(cache: &Cache) -> Vec<String> {
    let mut names: Vec<_> = match fs::read_dir(&cache.dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn file_url(path: &Path) -> String {
    Url::from_file_path(path).unwrap().to_string()
}

fn http_allowed() -> FetchSettings {
    FetchSettings {
        allow_http: true,
        ..FetchSettings::default()
    }
}

/// An HTTP/1.1 server answering every request with `respond(request head)`,
/// one request per connection. Stops when dropped.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let respond = Arc::new(respond);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (respond, log) = (Arc::clone(&respond), Arc::clone(&log));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    log.lock().unwrap().push(head.clone());
                    let _ = stream.write_all(&respond(&head)).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Server {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The request path of a request head.
fn path_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

const BODY: &[u8] = b"pretend this is a .tar.zst";

#[tokio::test]
async fn a_file_url_is_fetched_into_the_cache_under_its_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.tar.zst");
    fs::write(&src, BODY).unwrap();
    let cache = cache_in(&tmp, "cache");
    let hash = sha(BODY);
    assert!(!cache.contains(&hash));

    let path = cache
        .fetch(
            &file_url(&src),
            &hash.to_uppercase(),
            &FetchSettings::default(),
        )
        .await
        .unwrap();
    assert_eq!(path, cache.path_for(&hash));
    assert_eq!(path, tmp.path().join("cache").join(&hash));
    assert_eq!(fs::read(&path).unwrap(), BODY);
    assert!(cache.contains(&hash));
    assert_eq!(cache_files(&cache), [hash]);
}

/// Records what a download reports, for the caller's progress display.
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl super::Watch for Recorder {
    fn total(&mut self, bytes: Option<u64>) {
        self.0.lock().unwrap().push(format!("total {bytes:?}"));
    }
    fn advanced(&mut self, bytes: u64) {
        self.0.lock().unwrap().push(format!("+{bytes}"));
    }
    fn done(&mut self) {
        self.0.lock().unwrap().push("done".into());
    }
}

#[tokio::test]
async fn a_download_reports_its_size_and_bytes_to_the_callers_watcher() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.tar.zst");
    fs::write(&src, BODY).unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, labels) = (events.clone(), events.clone());
    let settings = FetchSettings {
        watch: super::Watcher::new(move |label| {
            labels.lock().unwrap().push(label);
            Box::new(Recorder(seen.clone()))
        }),
        ..FetchSettings::default()
    };
    cache_in(&tmp, "cache")
        .fetch(&file_url(&src), &sha(BODY), &settings)
        .await
        .unwrap();
    let events = events.lock().unwrap().clone();
    assert_eq!(events[0], "downloading app.tar.zst");
    assert_eq!(events[1], format!("total Some({})", BODY.len()));
    assert_eq!(events.last().unwrap(), "done");
    let bytes: usize = events
        .iter()
        .filter_map(|e| e.strip_prefix('+'))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(bytes, BODY.len());
}

#[tokio::test]
async fn a_cached_artifact_is_returned_without_touching_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.tar.zst");
    fs::write(&src, BODY).unwrap();
    let cache = cache_in(&tmp, "cache");
    let hash = sha(BODY);
    let url = file_url(&src);
    let first = cache
        .fetch(&url, &hash, &FetchSettings::default())
        .await
        .unwrap();
    fs::remove_file(&src).unwrap();
    let again = cache
        .fetch(&url, &hash, &FetchSettings::default())
        .await
        .unwrap();
    assert_eq!(first, again);
    // Any URL will do once the content is known: nothing listens here.
    let elsewhere = "https://127.0.0.1:9/gone.tar.zst";
    let third = cache
        .fetch(elsewhere, &hash, &FetchSettings::default())
        .await
        .unwrap();
    assert_eq!(first, third);
}

#[tokio::test]
async fn a_checksum_mismatch_names_the_url_and_both_hashes_and_keeps_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.tar.zst");
    fs::write(&src, BODY).unwrap();
    let cache = cache_in(&tmp, "cache");
    let wrong = sha(b"something else");
    let url = file_url(&src);
    let err = cache
        .fetch(&url, &wrong, &FetchSettings::default())
        .await
        .unwrap_err();
    match &err {
        ArtifactError::ChecksumMismatch {
            url: u,
            expected,
            actual,
        } => {
            assert_eq!(u, &url);
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &sha(BODY));
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = err.to_string();
    assert!(message.contains(&url) && message.contains(&wrong) && message.contains(&sha(BODY)));
    assert!(!err.is_transient());
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
}

#[tokio::test]
async fn plain_http_is_refused_without_connecting_unless_allowed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/app.tar.zst", listener.local_addr().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let err = cache
        .fetch(&url, &sha(BODY), &FetchSettings::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::BadUrl { reason, .. } if reason.contains("allow_http")),
        "{err}"
    );
    assert!(!err.is_transient());
    let connection = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(connection.is_err(), "a connection was made");
    assert!(cache_files(&cache).is_empty());
}

#[tokio::test]
async fn bad_urls_and_hashes_are_refused_as_permanent() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let hash = sha(BODY);
    for url in [
        "ftp://example.com/a.tar.zst",
        "not a url",
        "s3://bucket-only",
        "s3:///key-only",
        "file://remote.example.com/a.tar.zst",
    ] {
        let err = cache
            .fetch(url, &hash, &FetchSettings::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::BadUrl { .. }), "{url}: {err}");
        assert!(!err.is_transient(), "{url}");
    }
    for bad in ["", "abc", &"z".repeat(64), &format!("../{}", &hash[3..])] {
        let err = cache
            .fetch("file:///x", bad, &FetchSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ArtifactError::BadSha256 { .. }),
            "{bad}: {err}"
        );
    }
    let missing = file_url(&tmp.path().join("missing.tar.zst"));
    let err = cache
        .fetch(&missing, &hash, &FetchSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
    assert!(!err.is_transient());
    let err = cache
        .fetch(&file_url(tmp.path()), &hash, &FetchSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::BadUrl { .. }), "{err}");
}

fn web_server_response(head: &str) -> Vec<u8> {
    match path_of(head) {
        "/ok" => response("200 OK", &[], BODY),
        "/moved" => response("302 Found", &["Location: /ok"], b""),
        "/to-ftp" => response("302 Found", &["Location: ftp://example.com/x"], b""),
        "/loop" => response("302 Found", &["Location: /loop"], b""),
        "/busy" => response("503 Service Unavailable", &[], b"later"),
        "/forbidden" => response("403 Forbidden", &[], b"no"),
        "/short" => {
            let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".to_vec();
            out.extend_from_slice(BODY);
            out
        }
        _ => response("404 Not Found", &[], b"nothing here"),
    }
}

#[tokio::test]
async fn http_downloads_follow_redirects_and_classify_failures() {
    let server = Server::start(web_server_response).await;
    let tmp = tempfile::tempdir().unwrap();
    let hash = sha(BODY);
    let settings = http_allowed();

    let cache = cache_in(&tmp, "a");
    let path = cache
        .fetch(&server.url("/ok"), &hash, &settings)
        .await
        .unwrap();
    assert_eq!(fs::read(path).unwrap(), BODY);
    let cache = cache_in(&tmp, "b");
    cache
        .fetch(&server.url("/moved"), &hash, &settings)
        .await
        .unwrap();

    let cache = cache_in(&tmp, "c");
    let fail = async |path: &str| {
        let url = server.url(path);
        cache.fetch(&url, &hash, &settings).await.unwrap_err()
    };
    let err = fail("/missing").await;
    assert!(
        matches!(err, ArtifactError::NotFound { .. }) && !err.is_transient(),
        "{err}"
    );
    let err = fail("/forbidden").await;
    assert!(
        matches!(err, ArtifactError::AccessDenied { .. }) && !err.is_transient(),
        "{err}"
    );
    let err = fail("/busy").await;
    assert!(
        matches!(err, ArtifactError::HttpStatus { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    let err = fail("/short").await;
    assert!(err.is_transient(), "{err}");
    let err = fail("/to-ftp").await;
    assert!(
        matches!(err, ArtifactError::BadUrl { .. }) && !err.is_transient(),
        "{err}"
    );
    let err = fail("/loop").await;
    assert!(matches!(err, ArtifactError::BadUrl { .. }), "{err}");
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
}

#[tokio::test]
async fn errors_never_show_credentials_from_the_url() {
    let server = Server::start(web_server_response).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let url = format!(
        "http://deploy:hunter2@{}/missing?X-Amz-Signature=s3cr3t#frag",
        server.addr
    );
    let err = cache
        .fetch(&url, &sha(BODY), &http_allowed())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        !message.contains("hunter2") && !message.contains("s3cr3t"),
        "{message}"
    );
    assert!(!message.contains("deploy"), "{message}");
    assert!(message.contains(&server.addr.to_string()), "{message}");
    // Unreachable servers too.
    let url = "http://deploy:hunter2@127.0.0.1:9/x?token=s3cr3t";
    let err = cache
        .fetch(url, &sha(BODY), &http_allowed())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let message = err.to_string();
    assert!(
        !message.contains("hunter2") && !message.contains("s3cr3t"),
        "{message}"
    );
}

fn s3_response(head: &str) -> Vec<u8> {
    if path_of(head).contains("missing") {
        return response(
            "404 Not Found",
            &["Content-Type: application/xml"],
            b"<Error><Code>NoSuchKey</Code></Error>",
        );
    }
    response(
        "200 OK",
        &[
            "ETag: \"0123456789abcdef\"",
            "Last-Modified: Tue, 15 Nov 1994 08:12:31 GMT",
            "Content-Type: application/octet-stream",
        ],
        BODY,
    )
}

fn s3_settings(endpoint: String) -> FetchSettings {
    FetchSettings {
        allow_http: true,
        ca_file: None,
        watch: Default::default(),
        s3: Some(S3Settings {
            endpoint: Some(endpoint),
            region: "eu-west-1".into(),
            access_key_id: Some("AKIDHOISTTEST".into()),
            secret_access_key: Some("not-a-real-secret".into()),
        }),
    }
}

#[tokio::test]
async fn s3_objects_are_fetched_with_signed_path_style_requests() {
    let server = Server::start(s3_response).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let settings = s3_settings(server.url(""));
    let hash = sha(BODY);
    let path = cache
        .fetch("s3://releases/web/web%201.tar.zst", &hash, &settings)
        .await
        .unwrap();
    assert_eq!(fs::read(path).unwrap(), BODY);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let head = requests[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /releases/web/web%201.tar.zst http/1.1"),
        "{head}"
    );
    assert!(
        head.contains("authorization: aws4-hmac-sha256 credential=akidhoisttest/"),
        "{head}"
    );
    assert!(head.contains("/eu-west-1/s3/aws4_request"), "{head}");
    assert!(!head.contains("not-a-real-secret"));

    let err = cache_in(&tmp, "other")
        .fetch("s3://releases/missing.tar.zst", &hash, &settings)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "s3://releases/missing.tar.zst does not exist"
    );
}

#[tokio::test]
async fn s3_settings_problems_are_reported_before_any_request() {
    let server = Server::start(s3_response).await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let hash = sha(BODY);
    let url = "s3://releases/web.tar.zst";

    let err = cache.fetch(url, &hash, &http_allowed()).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Settings { reason, .. } if reason.contains("storage.s3")),
        "{err}"
    );

    let mut settings = s3_settings(server.url(""));
    settings.allow_http = false;
    let err = cache.fetch(url, &hash, &settings).await.unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Settings { reason, .. } if reason.contains("allow_http")),
        "{err}"
    );
    assert!(!err.is_transient());

    if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
        let mut settings = s3_settings(server.url(""));
        if let Some(s3) = settings.s3.as_mut() {
            s3.secret_access_key = None;
        }
        let err = cache.fetch(url, &hash, &settings).await.unwrap_err();
        assert!(matches!(err, ArtifactError::Settings { .. }), "{err}");
    }
    assert!(server.requests().is_empty());
    assert!(!format!("{:?}", s3_settings(server.url(""))).contains("not-a-real-secret"));
}

#[tokio::test]
async fn an_unusable_ca_file_is_a_settings_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let garbage = tmp.path().join("garbage.pem");
    fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for ca in [tmp.path().join("missing.pem"), garbage] {
        let settings = FetchSettings {
            ca_file: Some(ca.clone()),
            ..FetchSettings::default()
        };
        let err = cache
            .fetch("https://127.0.0.1:9/a.tar.zst", &sha(BODY), &settings)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ArtifactError::Settings { reason, .. } if reason.contains("ca_file")),
            "{ca:?}: {err}"
        );
    }
}

#[test]
fn prune_keeps_listed_artifacts_and_young_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    // Nothing fetched yet: nothing to do.
    cache.prune(&HashSet::new()).unwrap();

    fs::create_dir(&cache.dir).unwrap();
    let (keep, drop) = (sha(b"keep"), sha(b"drop"));
    for name in [&keep, &drop, ".tmp-old", ".tmp-young", "README"] {
        fs::write(cache.dir.join(name), b"x").unwrap();
    }
    let hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options()
        .write(true)
        .open(cache.dir.join(".tmp-old"))
        .unwrap()
        .set_modified(hours_ago)
        .unwrap();
    cache.prune(&HashSet::from([keep.to_uppercase()])).unwrap();
    let mut expected = vec![".tmp-young".to_string(), "README".into(), keep];
    expected.sort();
    assert_eq!(cache_files(&cache), expected);
}

#[test]
fn path_for_stays_in_the_cache_whatever_it_is_given() {
    let cache = Cache::new("/var/lib/hoist/cache");
    let hash = sha(BODY);
    assert_eq!(
        cache.path_for(&hash.to_uppercase()),
        Path::new("/var/lib/hoist/cache").join(&hash)
    );
    for bad in ["../../etc/passwd", "", "/etc/passwd"] {
        assert_eq!(
            cache.path_for(bad),
            Path::new("/var/lib/hoist/cache/not-a-sha256")
        );
        assert!(!cache.contains(bad));
    }
}

#[test]
fn s3_refusals_are_words_not_dumps() {
    let chain = "Error performing GET http://127.0.0.1:9000/releases/web.tar.zst in 2ms - \
                 Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" \
                 encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The \
                 request signature we calculated does not match</Message></Error>";
    let denial = super::s3_denial(chain);
    assert!(
        denial.starts_with(
            "the secret access key does not match the access key id (SignatureDoesNotMatch)"
        ),
        "{denial}"
    );
    assert!(!denial.contains('<'), "{denial}");
    let detail = super::s3_detail(&chain.replace("403 Forbidden", "503 Service Unavailable"));
    assert!(
        detail.ends_with("503 Service Unavailable (SignatureDoesNotMatch)"),
        "{detail}"
    );
    assert!(!detail.contains('<'), "{detail}");
    assert_eq!(super::s3_detail("connection refused"), "connection refused");
}

use crate::artifact::raw_tar::RawTar;

/// A .tar.zst holding `app/server.js` and `app/lib/big.bin` (large enough
/// that the download arrives in many pieces).
fn small_archive() -> Vec<u8> {
    let big: Vec<u8> = (0..3 * BUFFER as u32).map(|i| (i % 251) as u8).collect();
    let tar = RawTar::default()
        .dir("app")
        .file("app/server.js", b"console.log('v1')")
        .dir("app/lib")
        .file("app/lib/big.bin", &big)
        .finish();
    zstd::encode_all(&tar[..], 0).unwrap()
}

fn limits() -> UnpackLimits {
    UnpackLimits::default()
}

/// An artifact in a file store, an empty cache and where to unpack.
struct Stored {
    tmp: tempfile::TempDir,
    src: PathBuf,
    cache: Cache,
    dest: PathBuf,
}

fn stored(archive: &[u8]) -> Stored {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("app.tar.zst");
    fs::write(&src, archive).unwrap();
    Stored {
        cache: cache_in(&tmp, "cache"),
        dest: tmp.path().join("dest"),
        src,
        tmp,
    }
}

/// `fetch_and_unpack` of `src` (a file) into `dest`, expecting `sha256`.
async fn fetch_file_into(
    cache: &Cache,
    src: &Path,
    sha256: &str,
    dest: &Path,
) -> Result<(PathBuf, UnpackStats), ArtifactError> {
    let settings = FetchSettings::default();
    cache
        .fetch_and_unpack(&file_url(src), sha256, &settings, dest, &limits())
        .await
}

#[tokio::test]
async fn fetch_and_unpack_fills_the_cache_and_the_directory_together() {
    let archive = small_archive();
    let w = stored(&archive);
    let hash = sha(&archive);
    let (path, stats) = fetch_file_into(&w.cache, &w.src, &hash, &w.dest)
        .await
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), archive);
    assert_eq!(cache_files(&w.cache), vec![hash.clone()]);
    assert_eq!(stats.files, 2);
    let server_js = |dir: &Path| fs::read(dir.join("app/server.js")).unwrap();
    assert_eq!(server_js(&w.dest), b"console.log('v1')");
    assert_eq!(
        fs::metadata(w.dest.join("app/lib/big.bin")).unwrap().len(),
        3 * BUFFER as u64
    );

    // From the cache, with the source gone.
    fs::remove_file(&w.src).unwrap();
    let again = w.tmp.path().join("again");
    let (_, stats) = fetch_file_into(&w.cache, &w.src, &hash, &again)
        .await
        .unwrap();
    assert_eq!(stats.files, 2);
    assert_eq!(server_js(&again), b"console.log('v1')");
}

#[tokio::test]
async fn a_mismatch_takes_back_an_unpack_that_succeeded() {
    let w = stored(&small_archive());
    let wrong = sha(b"another artifact");
    let err = fetch_file_into(&w.cache, &w.src, &wrong, &w.dest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(!w.dest.exists(), "the unverified unpack was left behind");
    assert!(
        cache_files(&w.cache).is_empty(),
        "{:?}",
        cache_files(&w.cache)
    );
}

#[tokio::test]
async fn a_refused_archive_with_the_wrong_hash_is_reported_as_the_mismatch() {
    let tar = RawTar::default()
        .file("ok.txt", b"fine")
        .file("../escape.txt", b"nope")
        .finish();
    let archive = zstd::encode_all(&tar[..], 0).unwrap();
    let w = stored(&archive);

    let err = fetch_file_into(&w.cache, &w.src, &sha(b"other"), &w.dest)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ArtifactError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert!(!w.dest.exists());

    // With the right hash, the archive itself is what is refused.
    let err = fetch_file_into(&w.cache, &w.src, &sha(&archive), &w.dest)
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::UnsafeEntry { .. }), "{err}");
    assert!(err.condemns_artifact());
    assert!(!w.dest.exists());
    assert!(!w.tmp.path().join("escape.txt").exists());
}

#[tokio::test]
async fn a_download_that_breaks_off_leaves_no_directory_and_is_transient() {
    let archive = small_archive();
    let hash = sha(&archive);
    let served = archive.clone();
    // Announces the whole archive, sends half, then closes.
    let server = Server::start(move |_| {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            served.len()
        )
        .into_bytes();
        out.extend_from_slice(&served[..served.len() / 2]);
        out
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let cache = cache_in(&tmp, "cache");
    let dest = tmp.path().join("dest");
    let err = cache
        .fetch_and_unpack(
            &server.url("/app.tar.zst"),
            &hash,
            &http_allowed(),
            &dest,
            &limits(),
        )
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!err.condemns_artifact(), "{err}");
    assert!(!dest.exists(), "a broken download left its unpack behind");
    assert!(cache_files(&cache).is_empty(), "{:?}", cache_files(&cache));
}
