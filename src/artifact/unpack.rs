//! Unpacking an artifact into a fresh directory, treating every archive as
//! hostile even after its sha256 matched: the hash proves who published it,
//! not that the publisher's build was sane.
//!
//! The `tar` crate only parses here; it never touches the file system,
//! because `Entry::unpack` resolves paths through whatever is already on disk.
//! Instead every entry path is validated ([`RelPath::parse`]) and looked up in
//! a map of what this archive has created so far, which is the whole truth
//! about `dest` since we made it empty. That map is what refuses writes
//! through symlinks or files, duplicates, and hardlinks to anything but an
//! earlier regular file. Files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//! so even a bug in the map could not make us follow a link. Symlinks are
//! checked once the whole archive is read, against the final tree, because a
//! link's safety depends on links that may come later in the archive; as
//! nothing is ever written through a link, checking late is safe.
//!
//! Sizes in headers are never trusted: data bytes are counted as they are
//! copied, and the bytes the `tar` crate reads on its own (headers, PAX and
//! GNU long-name records, which it buffers in memory) are capped per entry by
//! [`Meter`]. On any error `dest` is removed, so a failed unpack leaves nothing.
//!
//! Three threads besides the caller's share the work, because on a
//! node_modules tree creating files (inode allocation, directory entries)
//! costs the kernel more than decompressing them: one decompresses, and two
//! only create and fill the small regular files the reading thread hands
//! them, whole, in batches ([`Writers`]). Every decision stays on the
//! reading thread (paths, the map, limits, directories, links); a writing
//! thread opens exactly the path it was given, with the same flags.
//! Hardlinks are made once every file is written, since the file they name
//! may still be in a queue. `dest` is created private (0700) and gets its
//! mode last, so nothing of a half-written release is reachable.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::Duration;

use tar::EntryType;

use super::ArtifactError;
use super::verify::{self, Kind, NodeId, RelPath, Tree};

/// How much an unpacked artifact may hold.
#[derive(Clone, Debug)]
pub struct UnpackLimits {
    /// Total bytes of file data.
    pub max_bytes: u64,
    /// Number of archive entries of any kind.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 4 << 30,
            max_entries: 200_000,
        }
    }
}

/// What an unpack created. `links` counts symlinks and hardlinks.
#[derive(Debug, Default)]
pub struct UnpackStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
}

/// The most the `tar` crate may read between two entries (headers, PAX and
/// GNU long-name records, padding), and after the last one. Real archives
/// need a few KiB; the cap stops a huge PAX record from filling memory.
const METADATA_BUDGET: u64 = 1 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const COPY_BUFFER: usize = 64 * 1024;
/// Decompressed bytes handed from the decompressing thread at a time, and
/// how many such chunks may wait: a few MiB in flight at most.
const DECODED_CHUNK: usize = 256 * 1024;
const DECODED_AHEAD: usize = 8;
/// How often written data is pushed to disk while unpacking.
const WRITEBACK_EVERY: Duration = Duration::from_millis(250);
/// Regular files up to this size are read whole and handed to the writing
/// threads; bigger ones are streamed to disk by the reading thread itself,
/// so what waits in memory stays small whatever the archive holds (about
/// `WRITERS * (WRITER_QUEUE + 1) + 1` batches of at most
/// `BATCH_BYTES + HANDED_OFF_MAX`: about 4 MiB).
const HANDED_OFF_MAX: u64 = 128 * 1024;
/// Files are handed over in batches of this many files or bytes: one
/// hand-over (and thread wake-up) per file would cost about as much as
/// creating a small file.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 256 * 1024;
/// Threads creating the handed-off files, and how many may wait for each.
/// Creating a file costs the kernel far more than parsing its header
/// (inode allocation, the directory entry): in a node_modules tree that,
/// not decompression, is what bounds an unpack, and two threads spread it
/// over two cores.
const WRITERS: usize = 2;
const WRITER_QUEUE: usize = 4;
/// The mode of the release root and of directories the archive implies
/// without naming them.
const IMPLIED_DIR_MODE: u32 = 0o755;

/// Unpacks a .tar.zst or .tar.gz (detected by magic bytes, not name; anything
/// else is an error) into `dest`, which must not exist yet (its parent must).
/// Blocking (callers use spawn_blocking).
///
/// On any error `dest` is removed entirely and nothing is left outside it.
/// On success everything written has been made durable with one syncfs(2) of
/// the file system holding `dest` (an fsync per file costs minutes on a
/// node_modules tree), so the caller can rename `dest` into place and fsync
/// the parent.
///
/// Modes are the archive's masked to 0o777 (no setuid, setgid or sticky),
/// except that directories always keep owner rwx, so hoist can prune the
/// release later. Owners and mtimes are not restored.
pub fn unpack(
    archive: &Path,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, ArtifactError> {
    let file = File::open(archive).map_err(ArtifactError::io(format!(
        "cannot open {}",
        archive.display()
    )))?;
    unpack_reader(file, &archive.display().to_string(), dest, limits)
}

/// [`unpack`] from a stream of archive bytes: `source` names the stream in
/// errors when reading it fails (a local fault, or a download cut short),
/// which is an [`ArtifactError::Io`], not a bad archive.
pub(crate) fn unpack_reader<R: Read + Send>(
    mut archive: R,
    source: &str,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackStats, ArtifactError> {
    let read_error = ArtifactError::io(format!("cannot read {source}"));
    let (format, magic) = match Format::detect(&mut archive) {
        Ok(detected) => detected?,
        Err(e) => return Err(read_error(e)),
    };
    DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(ArtifactError::io(format!(
            "cannot create the unpack directory {}",
            dest.display()
        )))?;
    let archive = io::Cursor::new(magic).chain(archive);
    let result = Unpacker::new(source, dest, limits).run(archive, format);
    if result.is_err() {
        remove_tree(dest);
    }
    result
}

#[derive(Clone, Copy)]
enum Format {
    Zstd,
    Gzip,
}

impl Format {
    /// Reads the first bytes of `archive` and returns the format they show,
    /// with those bytes (to be put back in front of the stream).
    fn detect(archive: &mut impl Read) -> io::Result<Result<(Format, Vec<u8>), ArtifactError>> {
        let mut magic = vec![0u8; ZSTD_MAGIC.len()];
        let mut got = 0;
        while got < magic.len() {
            match archive.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        magic.truncate(got);
        Ok(if magic == ZSTD_MAGIC {
            Ok((Format::Zstd, magic))
        } else if magic.starts_with(&GZIP_MAGIC) {
            Ok((Format::Gzip, magic))
        } else if magic.is_empty() {
            Err(ArtifactError::UnsupportedFormat {
                detail: "the file is empty".into(),
            })
        } else {
            Err(ArtifactError::UnsupportedFormat {
                detail: format!("it starts with the bytes {}", hex::encode(&magic)),
            })
        })
    }
}

/// Shared between [`Meter`], which sits inside the `tar::Archive`, and the
/// unpack loop, which switches it between "the tar crate is reading metadata"
/// (capped) and "we are reading entry data" (counted by us).
#[derive(Default)]
struct MeterState {
    capped: Cell<bool>,
    remaining: Cell<u64>,
    exceeded: Cell<bool>,
    /// The decompressed stream has ended.
    eof: Cell<bool>,
    /// Reading the archive itself failed: a local I/O fault or a broken
    /// download, not a bad archive.
    source_failed: Cell<bool>,
}

impl MeterState {
    fn cap(&self, budget: u64) {
        self.capped.set(true);
        self.remaining.set(budget);
    }

    fn uncap(&self) {
        self.capped.set(false);
    }
}

/// Wraps the decompressed stream; see [`MeterState`].
struct Meter<R> {
    inner: R,
    state: Rc<MeterState>,
    /// Bytes read so far: the stream position, for `Seek`.
    pos: u64,
}

/// Only forward skips from where the stream is, read through `read` (and so
/// metered) and dropped. The `tar` crate skips an entry's padding before
/// every header; without `Seek` it does so through a 32 KiB buffer it
/// zeroes on each call, which cost more than everything else it does.
impl<R: Read> io::Seek for Meter<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let io::SeekFrom::Current(skip) = to else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the archive stream only skips forward",
            ));
        };
        let mut left = u64::try_from(skip).map_err(|_| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the archive stream only skips forward",
            )
        })?;
        let mut scratch = [0u8; 512];
        while left > 0 {
            let want = left.min(scratch.len() as u64) as usize;
            match self.read(&mut scratch[..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive ends inside an entry",
                    ));
                }
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.pos)
    }
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let st = &self.state;
        let mut want = buf.len();
        if st.capped.get() {
            let remaining = st.remaining.get();
            if remaining == 0 && want > 0 {
                st.exceeded.set(true);
                return Err(io::Error::other("metadata budget exceeded"));
            }
            want = want.min(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            st.eof.set(true);
        }
        if st.capped.get() {
            st.remaining.set(st.remaining.get() - n as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A failure of the decompressing thread: the error, and whether it came
/// from reading the archive (rather than from bytes that do not decompress).
struct DecodeFailure {
    error: io::Error,
    source_failed: bool,
}

/// What the decompressing thread sends: decompressed bytes, its failure, or
/// the end of the stream. A channel that closes without `End` means the
/// thread died, which is never taken for the end of the archive.
enum Decoded {
    Bytes(Vec<u8>),
    Failed(DecodeFailure),
    End,
}

/// Decompresses `archive` into `out` on its own thread, so that on a
/// machine with two cores decompression and file creation overlap, as they
/// do for `zstd -d | tar -x`. Stops when the receiving side goes away.
fn decompress<R: Read>(
    archive: R,
    format: Format,
    out: SyncSender<Decoded>,
    spare: Receiver<Vec<u8>>,
) {
    let failed = Cell::new(false);
    let source = Source {
        inner: archive,
        failed: &failed,
    };
    let fail = |error: io::Error| {
        Decoded::Failed(DecodeFailure {
            error,
            source_failed: failed.get(),
        })
    };
    let mut decoder: Box<dyn Read + '_> = match format {
        Format::Zstd => match zstd::stream::read::Decoder::new(source) {
            Ok(d) => Box::new(d),
            Err(e) => {
                let _ = out.send(fail(e));
                return;
            }
        },
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(source)),
    };
    loop {
        // Chunks are sent full (but the last): a recycled one then needs
        // no zeroing, and the reading side fewer wake-ups.
        let mut chunk = spare.try_recv().unwrap_or_default();
        chunk.resize(DECODED_CHUNK, 0);
        let mut filled = 0;
        let mut end = None;
        while filled < chunk.len() {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => {
                    end = Some(Decoded::End);
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(fail(e));
                    break;
                }
            }
        }
        if filled > 0 {
            chunk.truncate(filled);
            if out.send(Decoded::Bytes(chunk)).is_err() {
                return;
            }
        }
        if let Some(end) = end {
            let _ = out.send(end);
            return;
        }
    }
}

/// The archive under the decompressor, noting whether reading it failed.
struct Source<'a, R> {
    inner: R,
    failed: &'a Cell<bool>,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed.set(true);
            }
        })
    }
}

/// A stream handed over in chunks, read as one: `next` takes the chunk just
/// used up (to recycle it) and gives the next one, None at the end.
pub(crate) struct Chunks<F> {
    next: F,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl<F: FnMut(Vec<u8>) -> io::Result<Option<Vec<u8>>>> Chunks<F> {
    pub(crate) fn new(next: F) -> Self {
        Chunks {
            next,
            chunk: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<Option<Vec<u8>>>> Read for Chunks<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            let used = std::mem::take(&mut self.chunk);
            self.at = 0;
            match (self.next)(used)? {
                Some(next) => self.chunk = next,
                None => self.ended = true,
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The receiving end of [`decompress`], read by the `tar` crate.
fn decompressed(
    from: Receiver<Decoded>,
    spare: Sender<Vec<u8>>,
    state: Rc<MeterState>,
) -> impl Read {
    Chunks::new(move |used: Vec<u8>| {
        if used.capacity() > 0 {
            let _ = spare.send(used);
        }
        match from.recv() {
            Ok(Decoded::Bytes(next)) => Ok(Some(next)),
            Ok(Decoded::End) => Ok(None),
            Ok(Decoded::Failed(f)) => {
                if f.source_failed {
                    state.source_failed.set(true);
                }
                Err(f.error)
            }
            Err(_) => Err(io::Error::other("the decompressing thread stopped")),
        }
    })
}

/// The error of an I/O call on `path`; its message is only built on failure
/// (this runs for every file of the archive).
fn io_at<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> ArtifactError + 'p {
    move |error| ArtifactError::Io {
        context: format!("{what} {}", path.display()),
        error,
    }
}

/// The process umask, from /proc (umask(2) can only read it by changing it,
/// for every thread at once). None when unknown: then every mode is set
/// explicitly after creation.
fn current_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// Creates the regular file `full`, which must not exist yet, never through a
/// symlink, with `mode` if the umask keeps it whole; returns it, and whether
/// its mode must still be set (`set_mode`) once it is written.
fn create_file(full: &Path, mode: u32, umask: Option<u32>) -> Result<(File, bool), ArtifactError> {
    let exact = umask.is_some_and(|u| mode & u == 0);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if exact { mode } else { 0o600 })
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(full)
        .map_err(io_at("cannot write", full))?;
    Ok((file, !exact))
}

fn set_mode(file: &File, full: &Path, mode: u32) -> Result<(), ArtifactError> {
    // fchmod, so the umask plays no part.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_at("cannot set the mode of", full))
}

/// A regular file read whole from the archive (already checked against the
/// archive's tree and the limits), for a writing thread to create.
struct FileJob {
    full: PathBuf,
    data: Vec<u8>,
    mode: u32,
}

/// One writing thread: creates the files queued for it, until the queue
/// closes or one fails (then it returns that failure, and the reading
/// thread finds the queue gone).
fn write_files(
    batches: Receiver<Vec<FileJob>>,
    queued: &AtomicUsize,
    umask: Option<u32>,
) -> Result<(), ArtifactError> {
    for batch in batches {
        for job in batch {
            let (mut file, chmod) = create_file(&job.full, job.mode, umask)?;
            file.write_all(&job.data)
                .map_err(io_at("cannot write", &job.full))?;
            if chmod {
                set_mode(&file, &job.full, job.mode)?;
            }
        }
        queued.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(())
}

/// The writing threads, seen from the reading thread: each batch goes to
/// the thread with the fewest batches waiting.
struct Writers<'scope> {
    lanes: Vec<Lane<'scope>>,
    /// Files not handed over yet, and their bytes.
    batch: Vec<FileJob>,
    batch_bytes: usize,
}

struct Lane<'scope> {
    queue: Option<SyncSender<Vec<FileJob>>>,
    /// Batches handed to this lane and not written yet.
    queued: &'scope AtomicUsize,
    thread: Option<std::thread::ScopedJoinHandle<'scope, Result<(), ArtifactError>>>,
}

impl<'scope> Writers<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        counters: &'scope [AtomicUsize],
        umask: Option<u32>,
    ) -> Result<Writers<'scope>, ArtifactError> {
        let mut lanes = Vec::with_capacity(counters.len());
        for queued in counters {
            let (queue, batches) = mpsc::sync_channel(WRITER_QUEUE);
            let thread = std::thread::Builder::new()
                .name("hoist-unpack".into())
                .spawn_scoped(scope, move || write_files(batches, queued, umask))
                .map_err(ArtifactError::io("cannot start a file-writing thread"))?;
            lanes.push(Lane {
                queue: Some(queue),
                queued,
                thread: Some(thread),
            });
        }
        Ok(Writers {
            lanes,
            batch: Vec::new(),
            batch_bytes: 0,
        })
    }

    /// Queues `job`.
    fn send(&mut self, job: FileJob) -> Result<(), ArtifactError> {
        self.batch_bytes += job.data.len();
        self.batch.push(job);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.hand_over()?;
        }
        Ok(())
    }

    fn hand_over(&mut self) -> Result<(), ArtifactError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let lane = (0..self.lanes.len())
            .min_by_key(|&i| self.lanes[i].queued.load(Ordering::Relaxed))
            .unwrap_or(0);
        let l = &self.lanes[lane];
        l.queued.fetch_add(1, Ordering::Relaxed);
        let sent = l.queue.as_ref().is_some_and(|q| q.send(batch).is_ok());
        if sent {
            return Ok(());
        }
        // That thread stopped on a failure: it is the error to report.
        match self.finish() {
            Err(e) => Err(e),
            Ok(()) => Err(ArtifactError::Io {
                context: "cannot write the unpacked files".into(),
                error: io::Error::other("a file-writing thread stopped"),
            }),
        }
    }

    /// Waits until every queued file is written; the first failure.
    fn finish(&mut self) -> Result<(), ArtifactError> {
        let mut result = Ok(());
        if !self.batch.is_empty() && self.lanes.iter().all(|l| l.queue.is_some()) {
            result = self.hand_over();
        }
        for lane in &mut self.lanes {
            lane.queue = None;
        }
        for lane in &mut self.lanes {
            let Some(thread) = lane.thread.take() else {
                continue;
            };
            let done = thread.join().unwrap_or_else(|_| {
                Err(ArtifactError::Io {
                    context: "cannot write the unpacked files".into(),
                    error: io::Error::other("a file-writing thread panicked"),
                })
            });
            if result.is_ok() {
                result = done;
            }
        }
        result
    }
}

struct Unpacker<'a> {
    /// Names the archive stream in errors.
    source: &'a str,
    dest: &'a Path,
    limits: &'a UnpackLimits,
    state: Rc<MeterState>,
    tree: Tree,
    /// Directories we created because an entry needed them, not (yet) named by an entry.
    implied: HashSet<NodeId>,
    /// Directories whose mode on disk is not yet the one they must end with
    /// (the umask took bits away, or an entry named an implied directory),
    /// set at the end.
    dir_modes: HashMap<NodeId, u32>,
    /// Hardlinks (the file they name, the link), made once every file is
    /// written: a writing thread may still be creating the file.
    hardlinks: Vec<(PathBuf, PathBuf)>,
    umask: Option<u32>,
    stats: UnpackStats,
    entries: u64,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(source: &'a str, dest: &'a Path, limits: &'a UnpackLimits) -> Self {
        Unpacker {
            source,
            dest,
            limits,
            state: Rc::default(),
            tree: Tree::default(),
            implied: HashSet::new(),
            dir_modes: HashMap::new(),
            hardlinks: Vec::new(),
            umask: current_umask(),
            stats: UnpackStats::default(),
            entries: 0,
            buf: vec![0; COPY_BUFFER],
        }
    }

    fn run<R: Read + Send>(self, archive: R, format: Format) -> Result<UnpackStats, ArtifactError> {
        let (to_tar, from_decoder) = mpsc::sync_channel(DECODED_AHEAD);
        let (spare_tx, spare_rx) = mpsc::channel();
        let counters: Vec<AtomicUsize> = (0..WRITERS).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("hoist-decompress".into())
                .spawn_scoped(scope, move || {
                    decompress(archive, format, to_tar, spare_rx);
                })
                .map_err(ArtifactError::io("cannot start the decompressing thread"))?;
            let decompressed = decompressed(from_decoder, spare_tx, Rc::clone(&self.state));
            // Writing back while unpacking: the final syncfs then has little
            // left to wait for. Stops when `unpacking` is dropped.
            let (unpacking, flusher) = mpsc::channel::<()>();
            if !cfg!(fuzzing)
                && let Ok(dir) = File::open(self.dest)
            {
                let _ = std::thread::Builder::new()
                    .name("hoist-writeback".into())
                    .spawn_scoped(scope, move || {
                        while let Err(RecvTimeoutError::Timeout) =
                            flusher.recv_timeout(WRITEBACK_EVERY)
                        {
                            // SAFETY: syncfs only reads the file descriptor, which `dir` keeps open.
                            unsafe { libc::syncfs(dir.as_raw_fd()) };
                        }
                    });
            }
            let mut writers = Writers::start(scope, &counters, self.umask)?;
            // `extract` owns the receiving end, so when it returns, early or
            // not, the decompressing thread's next send fails and it stops.
            // On an early return `writers` is dropped, which closes their
            // queues: they stop too, and the scope waits for them all.
            let unpacked = self.extract(decompressed, &mut writers);
            drop(unpacking);
            unpacked
        })
    }

    fn extract(
        mut self,
        decompressed: impl Read,
        writers: &mut Writers<'_>,
    ) -> Result<UnpackStats, ArtifactError> {
        let meter = Meter {
            inner: decompressed,
            state: Rc::clone(&self.state),
            pos: 0,
        };
        let mut archive = tar::Archive::new(meter);
        let mut entries = archive
            .entries_with_seek()
            .map_err(|e| self.read_error(e))?;
        loop {
            self.state.cap(METADATA_BUDGET);
            let next = entries.next();
            self.state.uncap();
            let mut entry = match next {
                None => break,
                Some(entry) => entry.map_err(|e| self.read_error(e))?,
            };
            self.count_entry()?;
            self.add(&mut entry, writers)?;
        }
        // The tar crate takes a clean end of stream between entries for the end
        // of the archive; a real archive ends with zero blocks instead.
        if self.state.eof.get() {
            return Err(ArtifactError::CorruptArchive {
                detail: "it ends without the tar end-of-archive marker".into(),
            });
        }
        // Read what follows the end marker so the decompressor checks its
        // trailer (gzip CRC, zstd checksum) and a cut-off stream is noticed.
        self.state.cap(METADATA_BUDGET);
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| self.read_error(e))?;

        writers.finish()?;
        for (original, link) in &self.hardlinks {
            fs::hard_link(original, link).map_err(ArtifactError::io(format!(
                "cannot create the hardlink {}",
                link.display()
            )))?;
        }
        self.check_symlinks()?;
        self.apply_dir_modes()?;
        self.sync()?;
        Ok(self.stats)
    }

    fn add<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        writers: &mut Writers<'_>,
    ) -> Result<(), ArtifactError> {
        let kind = entry.header().entry_type();
        let raw_path = entry.path_bytes().into_owned();
        let refuse = |reason: &str| ArtifactError::UnsafeEntry {
            entry: String::from_utf8_lossy(&raw_path).into_owned(),
            reason: reason.to_string(),
        };
        if kind == EntryType::XGlobalHeader {
            // `git archive` writes one (holding the commit id); it names no file.
            return self.drain(entry);
        }
        let path = RelPath::parse(&raw_path).map_err(refuse)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::Directory => {}
            EntryType::Symlink | EntryType::Link => {}
            EntryType::Char => return Err(refuse("it is a character device")),
            EntryType::Block => return Err(refuse("it is a block device")),
            EntryType::Fifo => return Err(refuse("it is a fifo")),
            EntryType::GNUSparse => return Err(refuse("it is a sparse file")),
            other => {
                return Err(refuse(&format!(
                    "its type {:?} is not a file, directory or link",
                    char::from(other.as_byte())
                )));
            }
        }
        if kind != EntryType::Directory && raw_path.ends_with(b"/") {
            return Err(refuse("it is not a directory but its path ends with `/`"));
        }
        if path.is_root() {
            if kind != EntryType::Directory {
                return Err(refuse("the archive root can only be a directory"));
            }
            return self.drain(entry);
        }
        let parent = self.make_parents(&path, &refuse)?;
        let Some(name) = path.names().last() else {
            return Err(refuse("the archive root can only be a directory"));
        };
        let existing = self.tree.child(parent, name);
        if let Some(id) = existing {
            let implied_dir = kind == EntryType::Directory && self.implied.contains(&id);
            if !implied_dir {
                let old = self.tree.kind(id);
                return Err(refuse(&match (kind, old) {
                    (EntryType::Directory, Kind::Dir) => "it appears twice in the archive".into(),
                    (EntryType::Directory, _) => {
                        format!("it is a directory over {}", old.describe())
                    }
                    (_, Kind::Dir) => "it would replace a directory".into(),
                    _ => format!("it would replace {} of the same name", old.describe()),
                }));
            }
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| ArtifactError::CorruptArchive {
                detail: format!("entry {}: {e}", path.display()),
            })?
            & 0o777;
        let full = self.dest.join(path.to_path_buf());
        match kind {
            EntryType::Directory => {
                // Owner rwx stays, so that hoist can fill the directory and
                // always prune the release later.
                let wanted = mode | 0o700;
                match existing {
                    Some(id) => {
                        self.implied.remove(&id);
                        if wanted == IMPLIED_DIR_MODE {
                            self.dir_modes.remove(&id);
                        } else {
                            self.dir_modes.insert(id, wanted);
                        }
                    }
                    None => {
                        let exact = self.mkdir(&full, wanted)?;
                        self.stats.dirs += 1;
                        let id = self.tree.insert(parent, name, Kind::Dir);
                        if !exact {
                            self.dir_modes.insert(id, wanted);
                        }
                    }
                }
                self.drain(entry)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                let target = target.unwrap_or_default();
                verify::check_link_text(&target).map_err(|p| refuse(p.reason()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &full).map_err(
                    ArtifactError::io(format!("cannot create the symlink {}", full.display())),
                )?;
                self.tree.insert(parent, name, Kind::Symlink(target));
                self.stats.links += 1;
                self.drain(entry)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                let target = RelPath::parse(&target.unwrap_or_default()).map_err(|reason| {
                    refuse(&format!(
                        "it is a hardlink whose target is refused: {reason}"
                    ))
                })?;
                let is_file = self
                    .tree
                    .lookup(&target)
                    .is_some_and(|id| matches!(self.tree.kind(id), Kind::File));
                if !is_file {
                    return Err(refuse(&format!(
                        "it is a hardlink to {}, which is not an earlier regular file of the archive",
                        target.display()
                    )));
                }
                let original = self.dest.join(target.to_path_buf());
                self.hardlinks.push((original, full));
                self.tree.insert(parent, name, Kind::File);
                self.stats.links += 1;
                self.drain(entry)
            }
            _ => {
                self.write_file(entry, &path, full, mode, writers)?;
                self.tree.insert(parent, name, Kind::File);
                self.stats.files += 1;
                Ok(())
            }
        }
    }

    /// Returns the directory that holds `path`, creating the missing ones
    /// (which count as entries: an archive of deep paths would otherwise
    /// create unbounded directories), refusing any that is not a directory.
    fn make_parents(
        &mut self,
        path: &RelPath,
        refuse: &dyn Fn(&str) -> ArtifactError,
    ) -> Result<NodeId, ArtifactError> {
        let parents = &path.names()[..path.names().len().saturating_sub(1)];
        let mut at = Tree::ROOT;
        for (depth, name) in parents.iter().enumerate() {
            at = match self.tree.child(at, name) {
                Some(id) => match self.tree.kind(id) {
                    Kind::Dir => id,
                    other => {
                        let through =
                            String::from_utf8_lossy(&parents[..=depth].join(&b'/')).into_owned();
                        return Err(refuse(&format!(
                            "its path passes through {} ({through})",
                            other.describe()
                        )));
                    }
                },
                None => {
                    self.count_entry()?;
                    let relative: PathBuf = parents[..=depth]
                        .iter()
                        .map(|n| OsStr::from_bytes(n))
                        .collect();
                    let exact = self.mkdir(&self.dest.join(relative), IMPLIED_DIR_MODE)?;
                    self.stats.dirs += 1;
                    let id = self.tree.insert(at, name, Kind::Dir);
                    self.implied.insert(id);
                    if !exact {
                        self.dir_modes.insert(id, IMPLIED_DIR_MODE);
                    }
                    id
                }
            };
        }
        Ok(at)
    }

    fn count_entry(&mut self) -> Result<(), ArtifactError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArtifactError::TooLarge {
                detail: format!("it has more than {} entries", self.limits.max_entries),
            });
        }
        Ok(())
    }

    /// Creates the directory `full` with `mode` as far as the umask lets
    /// it; returns whether it got `mode` exactly.
    fn mkdir(&self, full: &Path, mode: u32) -> Result<bool, ArtifactError> {
        // mkdir(2) never follows a symlink in the last component; it fails with EEXIST.
        let exact = self.umask.is_some_and(|u| mode & u == 0);
        DirBuilder::new()
            .mode(if exact { mode } else { 0o700 })
            .create(full)
            .map_err(io_at("cannot create the directory", full))?;
        Ok(exact)
    }

    /// Creates the file `path` with the entry's data: small ones by a
    /// writing thread, big ones streamed here.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &RelPath,
        full: PathBuf,
        mode: u32,
        writers: &mut Writers<'_>,
    ) -> Result<(), ArtifactError> {
        let announced = entry.size();
        self.charge(announced)?;
        let truncated = |copied: u64| ArtifactError::CorruptArchive {
            detail: format!(
                "the file {} ends after {copied} of its {announced} bytes",
                path.display()
            ),
        };
        if announced <= HANDED_OFF_MAX && !writers.lanes.is_empty() {
            // The header's size is at most HANDED_OFF_MAX here, and the tar
            // crate never reads past it.
            let mut data = Vec::with_capacity(announced as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| self.read_error(e))?;
            if data.len() as u64 != announced {
                return Err(truncated(data.len() as u64));
            }
            return writers.send(FileJob { full, data, mode });
        }
        let (mut file, chmod) = create_file(&full, mode, self.umask)?;
        let write_error = io_at("cannot write", &full);
        let mut copied = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            copied += n as u64;
            if let Err(e) = file.write_all(&self.buf[..n]) {
                return Err(write_error(e));
            }
        }
        if copied != announced {
            return Err(truncated(copied));
        }
        if chmod {
            set_mode(&file, &full, mode)?;
        }
        Ok(())
    }

    /// Counts `bytes` of data against the limit before they are read, so an
    /// announced size over the limit fails before any copying.
    fn charge(&mut self, bytes: u64) -> Result<(), ArtifactError> {
        self.stats.bytes = self.stats.bytes.saturating_add(bytes);
        if self.stats.bytes > self.limits.max_bytes {
            return Err(ArtifactError::TooLarge {
                detail: format!("it unpacks to more than {} bytes", self.limits.max_bytes),
            });
        }
        Ok(())
    }

    /// Reads and discards the data of an entry that is not a file, counting it
    /// like file data: directories and links normally have none.
    fn drain<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ArtifactError> {
        self.charge(entry.size())?;
        // io::copy zeroes a buffer of its own first: not for nothing.
        if entry.size() > 0 {
            io::copy(entry, &mut io::sink()).map_err(|e| self.read_error(e))?;
        }
        Ok(())
    }

    /// Maps an error from reading the archive stream to its cause.
    fn read_error(&self, e: io::Error) -> ArtifactError {
        if self.state.source_failed.get() {
            ArtifactError::Io {
                context: format!("cannot read {}", self.source),
                error: e,
            }
        } else if self.state.exceeded.get() {
            ArtifactError::CorruptArchive {
                detail: format!(
                    "more than {METADATA_BUDGET} bytes of headers or trailing data around one entry"
                ),
            }
        } else {
            ArtifactError::CorruptArchive {
                detail: e.to_string(),
            }
        }
    }

    fn check_symlinks(&self) -> Result<(), ArtifactError> {
        self.tree
            .check_links()
            .map_err(|(path, problem)| ArtifactError::UnsafeEntry {
                entry: path.display(),
                reason: problem.reason().to_string(),
            })
    }

    fn apply_dir_modes(&self) -> Result<(), ArtifactError> {
        // The root's mode is ours, whatever the umask or a `./` entry say;
        // it was created private, so nothing was reachable while unpacking.
        let root = std::iter::once((&Tree::ROOT, &IMPLIED_DIR_MODE));
        for (id, mode) in root.chain(&self.dir_modes) {
            let full = self.dest.join(self.tree.path(*id).to_path_buf());
            fs::set_permissions(&full, Permissions::from_mode(*mode)).map_err(
                ArtifactError::io(format!("cannot set the mode of {}", full.display())),
            )?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), ArtifactError> {
        // A fuzz run unpacks thousands of archives a second into throwaway
        // directories; a syncfs each would measure the disk, not the parser.
        if cfg!(fuzzing) {
            return Ok(());
        }
        let context = || format!("cannot flush {} to disk", self.dest.display());
        let dir = File::open(self.dest).map_err(|e| ArtifactError::Io {
            context: context(),
            error: e,
        })?;
        // SAFETY: syncfs only reads the file descriptor, which `dir` keeps open.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(ArtifactError::Io {
                context: context(),
                error: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// Best-effort removal of a failed unpack. `remove_dir_all` does not follow
/// symlinks, so this cannot reach outside `dest`.
pub(crate) fn remove_tree(dest: &Path) {
    if let Err(e) = fs::remove_dir_all(dest) {
        tracing::warn!(path = %dest.display(), error = %e, "cannot remove a failed unpack");
    }
}

#[cfg(test)]
mod tests;
