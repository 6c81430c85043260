//! The manifest parser meets text from anyone who can push to the config
//! repository. Whatever the bytes, it must return a manifest or a located
//! error: never panic, never hang.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match hoist::config::parse_manifest(Path::new("apps/web.yaml"), text) {
        Ok((_, m)) => {
            // A manifest that parsed is used: these must not panic either.
            let _ = m.process_names();
            let _ = m.targets_host("web-1", &["web".to_string()]);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
