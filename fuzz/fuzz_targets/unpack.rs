//! The unpacker meets archives from anyone who can write to the object
//! store. Whatever the bytes, it must refuse or unpack without panicking,
//! and nothing may appear outside the destination directory.
//!
//! The input is a tar stream; it is gzip-compressed (fast level) before
//! unpacking so the fuzzer spends its time on the tar layer. Inputs starting
//! with the zstd or gzip magic are passed as they are, so the format
//! detection and the decompressors are reached too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let archive = tmp.path().join("a.tar.gz");
    let raw = data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || data.starts_with(&[0x1f, 0x8b]);
    let bytes = if raw {
        data.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("in memory");
        gz.finish().expect("in memory")
    };
    std::fs::write(&archive, &bytes).expect("write the archive");
    let dest = tmp.path().join("staging");
    let limits = hoist::artifact::UnpackLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    let result = hoist::artifact::unpack(&archive, &dest, &limits);
    // Nothing but the archive and (on success) the staging dir is left.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("list the temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    match result {
        Ok(_) => assert_eq!(names, ["a.tar.gz", "staging"], "{names:?}"),
        Err(e) => {
            assert_eq!(names, ["a.tar.gz"], "a refused archive left {names:?}: {e}");
            let _ = e.to_string();
        }
    }
});
