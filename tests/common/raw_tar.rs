//! Tar streams written by hand, so they can hold anything a hostile archive
//! might: `..` and absolute paths, links out of the tree, GNU long names and
//! PAX records that rename the next entry, devices, no end-of-archive
//! blocks. The `tar` crate's builder refuses to write most of them.
//!
//! Shared by the unpacker's unit tests (src/artifact/unpack/tests.rs, which
//! include this file by path) and the end-to-end ones (tests/hostile.rs), so
//! it uses nothing but the `tar` and `flate2` crates.

#![allow(dead_code)]

use std::io::Write;

#[derive(Clone, Default)]
pub struct RawTar(Vec<u8>);

impl RawTar {
    pub fn header(&mut self, name: &[u8], kind: u8, size: u64, mode: u32, link: &[u8]) {
        let mut h = tar::Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_size(size);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mtime(0);
        if let Some(gnu) = h.as_gnu_mut() {
            // Sparse entries must carry a real size to reach us at all.
            gnu.set_real_size(size);
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
    }

    pub fn data(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0, pad));
    }

    pub fn entry(mut self, name: &str, kind: u8, mode: u32, link: &str, data: &[u8]) -> Self {
        self.header(
            name.as_bytes(),
            kind,
            data.len() as u64,
            mode,
            link.as_bytes(),
        );
        self.data(data);
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, b'0', 0o644, "", data)
    }

    pub fn dir(self, name: &str) -> Self {
        self.entry(name, b'5', 0o755, "", b"")
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'2', 0o777, target, b"")
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, b'1', 0o644, target, b"")
    }

    /// A GNU long-name record naming the next entry.
    pub fn long_name(mut self, name: &[u8]) -> Self {
        let mut data = name.to_vec();
        data.push(0);
        self.header(b"././@LongLink", b'L', data.len() as u64, 0o644, b"");
        self.data(&data);
        self
    }

    /// A PAX extended header for the next entry.
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        let data = pax_record(key, value);
        self.header(b"PaxHeader", b'x', data.len() as u64, 0o644, b"");
        self.data(&data);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend(std::iter::repeat_n(0, 1024));
        self.0
    }

    /// Without the end-of-archive zero blocks.
    pub fn unterminated(self) -> Vec<u8> {
        self.0
    }
}

/// One PAX record, `<len> <key>=<value>\n`, where `<len>` counts itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

pub fn gz(tar: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(tar).unwrap();
    enc.finish().unwrap()
}
