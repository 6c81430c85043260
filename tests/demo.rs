//! `hoist demo --fleet` end to end (SPEC §5): the binary builds its three
//! servers, rolls two releases out in waves, stops a crash-looping one at
//! the canary and reverts it, with real pm2 and node; it must exit 0,
//! having shown the halt and every server green, and leave nothing behind.

mod common;

use std::process::Command;

use common::{hoist_bin, pm2_bin};

#[test]
fn fleet_demo_halts_at_the_canary_and_the_revert_turns_all_green() {
    let out = Command::new(hoist_bin())
        .args(["demo", "--fleet"])
        .env("HOIST_PM2", pm2_bin())
        .env_remove("HOIST_DEMO_KEEP")
        .output()
        .expect("hoist demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    let at = |needle: &str| {
        stdout
            .find(needle)
            .unwrap_or_else(|| panic!("the demo did not print {needle:?}:\n{stdout}"))
    };
    // While the canary bakes, the others wait and serve the release before.
    let bake = at("web 2.0.0: wave 1 baking");
    assert!(
        stdout[bake..].contains("web-2  waiting    1.0.0"),
        "{stdout}"
    );
    // The bad release halts: the canary rolled back, the others report it.
    let halted = at("web 2.1.0: wave 1 0/1 live, 1 failed · wave 2 blocked · HALTED");
    assert!(bake < halted);
    for host in ["web-2", "web-3"] {
        assert!(
            stdout[halted..].contains(&format!("{host}  halted     2.0.0")),
            "{stdout}"
        );
    }
    assert!(stdout[halted..].contains("web 2.1.0 halted: web-1 failed"));
    // The revert: every server green on 2.0.0.
    let revert = at("== step 4: revert the bad commit");
    assert!(halted < revert);
    assert!(stdout[revert..].contains("· rolled out"), "{stdout}");
    assert!(
        stdout[revert..].contains(
            "web-1 answers \"web 2.0.0\" · web-2 answers \"web 2.0.0\" · web-3 answers \"web 2.0.0\""
        ),
        "{stdout}"
    );
    at("demo finished");

    // Its folder (roots, state dirs, pm2 homes) is gone.
    let first = stdout.lines().next().unwrap_or("");
    let dir = first
        .strip_prefix("hoist demo --fleet in ")
        .unwrap_or_else(|| panic!("first line: {first:?}"));
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
}
