//! The checks that decide whether an artifact can be trusted, kept free of
//! I/O so they can be tested exhaustively: the sha256 that identifies an
//! artifact (parsed, and computed while bytes stream past), the rules for a
//! path inside a release, and whether a symlink stays inside the release.
//!
//! `fetch` hashes with [`Sha256Stream`], `unpack` validates every entry with
//! [`RelPath::parse`] and [`check_link_target`], and `pack` applies the same
//! link rule to the tree it is about to publish, so an artifact that `pack`
//! writes is always one that `unpack` accepts.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// Longest single name Linux accepts (NAME_MAX).
const MAX_NAME_BYTES: usize = 255;
/// Longest path or link target we accept (PATH_MAX less the terminating NUL).
pub(crate) const MAX_PATH_BYTES: usize = 4095;
/// How many symlinks one resolution may pass through, as the kernel's ELOOP limit.
const MAX_LINK_HOPS: u32 = 40;
/// Names walked while checking all the symlinks of one tree; real trees need
/// a few per link, so this only stops hostile ones.
const MAX_LINK_STEPS: u64 = 1 << 24;

/// Returns the lowercase form of `value` if it is a sha256 in hex (64 digits).
pub(crate) fn normalize_sha256(value: &str) -> Option<String> {
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// A sha256 computed over bytes as they stream past, with their count.
#[derive(Default)]
pub(crate) struct Sha256Stream {
    hasher: Sha256,
    bytes: u64,
}

impl Sha256Stream {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest as lowercase hex.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// A writer that hashes everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hash: Sha256Stream,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hash: Sha256Stream::default(),
        }
    }

    pub(crate) fn into_parts(self) -> (W, Sha256Stream) {
        (self.inner, self.hash)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A path inside a release, as a list of plain names: no root, no `.`, no
/// `..`, no empty names, no NUL. The empty list is the release root itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RelPath(Vec<Vec<u8>>);

impl RelPath {
    /// Parses an archive entry path. A leading `./`, repeated or trailing
    /// slashes and `.` components are harmless spellings and are dropped;
    /// anything that could name a place outside the release is refused with
    /// the reason why.
    pub(crate) fn parse(raw: &[u8]) -> Result<RelPath, &'static str> {
        if raw.is_empty() {
            return Err("its path is empty");
        }
        if raw.contains(&0) {
            return Err("its path contains a NUL byte");
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err("its path is longer than 4095 bytes");
        }
        if raw[0] == b'/' {
            return Err("it is an absolute path");
        }
        let mut names = Vec::new();
        for name in raw.split(|b| *b == b'/') {
            match name {
                b"" | b"." => {}
                b".." => return Err("its path contains a `..` component"),
                _ if name.len() > MAX_NAME_BYTES => {
                    return Err("a name in its path is longer than 255 bytes");
                }
                _ => names.push(name.to_vec()),
            }
        }
        Ok(RelPath(names))
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The names, outermost first.
    pub(crate) fn names(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// The path relative to the release root, for joining onto a real directory.
    pub(crate) fn to_path_buf(&self) -> PathBuf {
        self.0.iter().map(|n| OsStr::from_bytes(n)).collect()
    }

    /// The path for messages.
    pub(crate) fn display(&self) -> String {
        if self.is_root() {
            return ".".to_string();
        }
        String::from_utf8_lossy(&self.0.join(&b'/')).into_owned()
    }
}

/// Why a symlink target is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkProblem {
    Empty,
    Nul,
    TooLong,
    Absolute,
    Escapes,
    TooManyHops,
    TooComplex,
}

impl LinkProblem {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            LinkProblem::Empty => "it is a symlink with an empty target",
            LinkProblem::Nul => "it is a symlink whose target contains a NUL byte",
            LinkProblem::TooLong => "it is a symlink whose target is longer than 4095 bytes",
            LinkProblem::Absolute => "it is a symlink with an absolute target",
            LinkProblem::Escapes => "it is a symlink that points outside the release",
            LinkProblem::TooManyHops => "it is a symlink in a loop of more than 40 symlinks",
            LinkProblem::TooComplex => {
                "the archive's symlinks take more than 16 million steps to check"
            }
        }
    }
}

/// The checks on a symlink target that need no knowledge of the tree.
pub(crate) fn check_link_text(target: &[u8]) -> Result<(), LinkProblem> {
    if target.is_empty() {
        Err(LinkProblem::Empty)
    } else if target.contains(&0) {
        Err(LinkProblem::Nul)
    } else if target.len() > MAX_PATH_BYTES {
        Err(LinkProblem::TooLong)
    } else if target[0] == b'/' {
        Err(LinkProblem::Absolute)
    } else {
        Ok(())
    }
}

/// What is at one place in a release tree.
#[derive(Debug)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
}

impl Kind {
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Kind::Dir => "a directory",
            Kind::File => "a file",
            Kind::Symlink(_) => "a symlink",
        }
    }
}

/// A place in a [`Tree`]; the release root is [`Tree::ROOT`].
pub(crate) type NodeId = usize;

#[derive(Debug)]
struct Node {
    parent: NodeId,
    name: Vec<u8>,
    kind: Kind,
    children: HashMap<Vec<u8>, NodeId>,
}

/// A model of a release directory: what `unpack` has created so far, or what
/// `pack` found on disk. An arena of nodes rather than a map keyed by full
/// path, so one step down costs one hash of one name whatever the depth, and
/// a hostile archive of very deep paths stays linear.
#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node {
                parent: Tree::ROOT,
                name: Vec::new(),
                kind: Kind::Dir,
                children: HashMap::new(),
            }],
        }
    }
}

impl Tree {
    pub(crate) const ROOT: NodeId = 0;

    pub(crate) fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.nodes[dir].children.get(name).copied()
    }

    pub(crate) fn kind(&self, id: NodeId) -> &Kind {
        &self.nodes[id].kind
    }

    /// Adds `name` under the directory `dir`, replacing nothing: callers
    /// check with [`Tree::child`] first.
    pub(crate) fn insert(&mut self, dir: NodeId, name: &[u8], kind: Kind) -> NodeId {
        debug_assert!(matches!(self.nodes[dir].kind, Kind::Dir));
        let id = self.nodes.len();
        self.nodes.push(Node {
            parent: dir,
            name: name.to_vec(),
            kind,
            children: HashMap::new(),
        });
        self.nodes[dir].children.insert(name.to_vec(), id);
        id
    }

    /// The node at `path`, following names literally (never through a symlink).
    pub(crate) fn lookup(&self, path: &RelPath) -> Option<NodeId> {
        path.names()
            .iter()
            .try_fold(Tree::ROOT, |at, name| self.child(at, name))
    }

    pub(crate) fn path(&self, mut id: NodeId) -> RelPath {
        let mut names = Vec::new();
        while id != Tree::ROOT {
            names.push(self.nodes[id].name.clone());
            id = self.nodes[id].parent;
        }
        names.reverse();
        RelPath(names)
    }

    /// Every node below the root, each directory's children sorted by name,
    /// parents before their children.
    pub(crate) fn sorted(&self) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![Tree::ROOT];
        while let Some(id) = stack.pop() {
            if id != Tree::ROOT {
                out.push(id);
            }
            let mut children: Vec<_> = self.nodes[id].children.iter().collect();
            // Reverse order on the stack pops the smallest name first.
            children.sort_unstable_by(|a, b| b.0.cmp(a.0));
            stack.extend(children.into_iter().map(|(_, id)| *id));
        }
        out
    }

    /// Checks that every symlink of the tree resolves to a place inside it,
    /// the way the kernel would resolve it: from the link's own directory,
    /// following every symlink it passes through.
    ///
    /// Resolving `..` by text alone is not enough: with `s -> .`, the target
    /// `s/s/s/..` looks like it stays two levels down but climbs out of the
    /// root. Names that do not exist (yet) are resolved by text, so a link
    /// that would escape once its path is created is refused too.
    pub(crate) fn check_links(&self) -> Result<(), (RelPath, LinkProblem)> {
        let mut walk = LinkWalk {
            tree: self,
            hops: 0,
            steps: 0,
        };
        for (id, node) in self.nodes.iter().enumerate() {
            if let Kind::Symlink(target) = &node.kind {
                walk.hops = 0;
                let mut at = Position {
                    dir: node.parent,
                    below: 0,
                };
                walk.walk(&mut at, target)
                    .map_err(|problem| (self.path(id), problem))?;
            }
        }
        Ok(())
    }
}

/// Where a link resolution has got to: `below` names under the existing
/// directory `dir`, through names that do not exist as directories.
struct Position {
    dir: NodeId,
    below: usize,
}

struct LinkWalk<'t> {
    tree: &'t Tree,
    hops: u32,
    /// Over all links of the tree, so the check of a hostile archive stays cheap.
    steps: u64,
}

impl LinkWalk<'_> {
    fn walk(&mut self, at: &mut Position, target: &[u8]) -> Result<(), LinkProblem> {
        check_link_text(target)?;
        for name in target.split(|b| *b == b'/') {
            self.steps += 1;
            if self.steps > MAX_LINK_STEPS {
                return Err(LinkProblem::TooComplex);
            }
            match name {
                b"" | b"." => {}
                b".." if at.below > 0 => at.below -= 1,
                b".." if at.dir == Tree::ROOT => return Err(LinkProblem::Escapes),
                b".." => at.dir = self.tree.nodes[at.dir].parent,
                _ if at.below > 0 => at.below += 1,
                _ => match self.tree.child(at.dir, name) {
                    Some(id) => match &self.tree.nodes[id].kind {
                        Kind::Dir => at.dir = id,
                        Kind::File => at.below = 1,
                        Kind::Symlink(next) => {
                            self.hops += 1;
                            if self.hops > MAX_LINK_HOPS {
                                return Err(LinkProblem::TooManyHops);
                            }
                            self.walk(at, next)?;
                        }
                    },
                    None => at.below = 1,
                },
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_must_be_64_hex_digits_and_is_lowercased() {
        let upper = "A".repeat(64);
        assert_eq!(normalize_sha256(&upper), Some("a".repeat(64)));
        assert_eq!(normalize_sha256(&"a".repeat(63)), None);
        assert_eq!(normalize_sha256(&"g".repeat(64)), None);
        assert_eq!(normalize_sha256(&format!("../{}", "a".repeat(61))), None);
    }

    #[test]
    fn sha256_stream_matches_a_known_digest() {
        let mut s = Sha256Stream::default();
        s.update(b"ab");
        s.update(b"c");
        assert_eq!(s.bytes(), 3);
        assert_eq!(
            s.finish(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn harmless_spellings_of_a_path_are_accepted() {
        let p = RelPath::parse(b"./a//b/./c/").unwrap();
        assert_eq!(p.display(), "a/b/c");
        assert_eq!(p.to_path_buf(), PathBuf::from("a/b/c"));
        assert!(RelPath::parse(b".").unwrap().is_root());
        assert!(RelPath::parse(b"./").unwrap().is_root());
    }

    #[test]
    fn paths_that_could_leave_the_release_are_refused() {
        for bad in [
            &b"/etc/passwd"[..],
            b"//x",
            b"..",
            b"a/../../b",
            b"a/..",
            b"./..",
            b"",
            b"a\0b",
        ] {
            assert!(
                RelPath::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(RelPath::parse(&[b'a'; 256]).is_err());
        assert!(RelPath::parse(&[b'a'; 255]).is_ok());
        assert!(RelPath::parse(&b"a/".repeat(2048)).is_err());
    }

    /// A tree from `path` (a directory, with parents made as needed) and
    /// `path -> target` (a symlink) descriptions.
    fn tree(spec: &[&str]) -> Tree {
        let mut tree = Tree::default();
        for line in spec {
            let (path, target) = match line.split_once(" -> ") {
                Some((p, t)) => (p, Some(t)),
                None => (*line, None),
            };
            let path = RelPath::parse(path.as_bytes()).unwrap();
            let (last, parents) = path.names().split_last().unwrap();
            let mut at = Tree::ROOT;
            for name in parents {
                at = match tree.child(at, name) {
                    Some(id) => id,
                    None => tree.insert(at, name, Kind::Dir),
                };
            }
            let kind = match target {
                Some(t) => Kind::Symlink(t.as_bytes().to_vec()),
                None if last.starts_with(b"f") => Kind::File,
                None => Kind::Dir,
            };
            tree.insert(at, last, kind);
        }
        tree
    }

    fn problem(spec: &[&str]) -> Option<(String, LinkProblem)> {
        tree(spec)
            .check_links()
            .err()
            .map(|(path, problem)| (path.display(), problem))
    }

    #[test]
    fn links_that_stay_inside_are_accepted() {
        for spec in [
            &["a/b/up -> ../c"][..],
            &["a/b/top -> ../../x"],
            &["dot -> ."],
            &["dangling -> no/such/../file"],
            &["a/b/c", "up -> a/b/../b/c/../../.."],
            &["a/b/up -> ../c", "via -> a/b/up/../d"],
            &["a/f1", "x -> a/f1/.."],
        ] {
            assert_eq!(problem(spec), None, "{spec:?}");
        }
    }

    #[test]
    fn links_that_leave_are_refused() {
        let escapes = |spec: &[&str], link: &str| {
            assert_eq!(
                problem(spec),
                Some((link.to_string(), LinkProblem::Escapes)),
                "{spec:?}"
            );
        };
        escapes(&["out -> .."], "out");
        escapes(&["a/out -> ../../x"], "a/out");
        escapes(&["deep -> a/b/c/../../../.."], "deep");
        escapes(&["missing -> nothing/../.."], "missing");
        // By text `s/s/s/..` stays inside, but `s` is the root itself.
        escapes(&["s -> .", "climb -> s/s/s/.."], "climb");
        // By text `a/b/l/..` is `a/b`, but `l` is the root, so `..` leaves.
        escapes(&["a/b/l -> ../..", "a/b/up -> l/.."], "a/b/up");
        assert_eq!(
            problem(&["abs -> /etc"]),
            Some(("abs".into(), LinkProblem::Absolute))
        );
        assert_eq!(
            problem(&["empty -> "]).map(|p| p.1),
            Some(LinkProblem::Empty)
        );
        assert_eq!(
            problem(&["l1 -> l2", "l2 -> l1"]).map(|p| p.1),
            Some(LinkProblem::TooManyHops)
        );
    }

    #[test]
    fn a_link_through_a_link_that_leaves_is_refused_even_when_checked_first() {
        assert_eq!(
            problem(&["via -> inner/x", "inner -> ../outside"]),
            Some(("via".to_string(), LinkProblem::Escapes))
        );
    }

    #[test]
    fn sorted_lists_parents_first_and_names_in_byte_order() {
        let t = tree(&["b/f", "a-b", "a/z", "a/b"]);
        let order: Vec<_> = t
            .sorted()
            .into_iter()
            .map(|id| t.path(id).display())
            .collect();
        assert_eq!(order, ["a", "a/b", "a/z", "a-b", "b", "b/f"]);
        assert!(t.lookup(&RelPath::parse(b"a/z").unwrap()).is_some());
        assert!(t.lookup(&RelPath::parse(b"a/q").unwrap()).is_none());
    }
}
