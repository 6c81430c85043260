//! `hoist publish`: the producer side. Packs a build directory reproducibly,
//! uploads it to the store, and points a manifest at it.

use std::path::Path;

pub async fn publish(
    config: &Path,
    dir: &Path,
    to: &str,
    manifest: Option<&Path>,
    release: Option<&str>,
) -> Result<(), String> {
    let _ = (config, dir, to, manifest, release);
    Err("hoist publish is not available yet; use `hoist pack` and upload the file".into())
}
