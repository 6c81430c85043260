//! Signatures, with real keys: commits signed by `git commit -S` with
//! ssh-keygen keys (`repo.allowed_signers_file`), and artifacts signed by the
//! `minisign` CLI (`storage.trusted_keys`). Whatever is unsigned or signed by
//! the wrong key gets status `error` and changes nothing on the server.

mod common;

use common::{World, git};
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh ed25519 key pair; returns the private key's path.
fn ssh_key(w: &World, name: &str) -> PathBuf {
    let key = w.path(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key));
    key
}

fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Host config with an extra key under `repo:`.
fn set_repo_key(w: &World, line: &str) {
    let text = std::fs::read_to_string(w.config_path()).unwrap();
    assert!(text.contains("  jitter: 0s\n"));
    let text = text.replace("  jitter: 0s\n", &format!("  jitter: 0s\n  {line}\n"));
    std::fs::write(w.config_path(), text).unwrap();
}

/// Commits and pushes, signed with `key` when given.
fn commit_signed(w: &World, msg: &str, key: Option<&Path>) -> String {
    let work = w.path("work");
    git(&work, &["add", "-A"]);
    match key {
        Some(k) => {
            let signing = format!("user.signingkey={}", k.display());
            git(
                &work,
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &signing,
                    "commit",
                    "-q",
                    "-S",
                    "--allow-empty",
                    "-m",
                    msg,
                ],
            );
        }
        None => {
            git(&work, &["commit", "-q", "--allow-empty", "-m", msg]);
        }
    }
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(&work, &["rev-parse", "HEAD"])
}

fn assert_refused(w: &World, c: &str, reason: &str, live: &str, on_disk: &[&str]) {
    let out = w.once(1);
    let (state, desc) = w.final_status(c).expect("a status");
    assert_eq!(state, "error", "{desc}\n{out}");
    assert!(desc.contains(reason), "{desc:?} lacks {reason:?}");
    assert_eq!(w.app_says().as_deref(), Some(live));
    assert_eq!(
        w.current_target("web"),
        Some(format!("releases/{live}")),
        "{out}"
    );
    assert_eq!(w.releases_on_disk("web"), on_disk);
    // Refused once is refused for good: no new event on the next pass.
    let events = w.history().len();
    w.once(1);
    assert_eq!(w.history().len(), events);
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_applied() {
    let w = World::new();
    let deployer = ssh_key(&w, "deployer");
    let stranger = ssh_key(&w, "stranger");
    std::fs::write(
        w.path("allowed_signers"),
        format!(
            "# who may deploy\ndeployer@example.com namespaces=\"git\" {}\n",
            public(&deployer)
        ),
    )
    .unwrap();
    set_repo_key(
        &w,
        &format!(
            "allowed_signers_file: {}",
            w.path("allowed_signers").display()
        ),
    );

    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    let c1 = commit_signed(&w, "web v1", Some(&deployer));
    w.once(0);
    assert_eq!(w.final_status(&c1).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // Unsigned.
    let (url2, sha2) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url2, &sha2, "");
    let c2 = commit_signed(&w, "web v2, unsigned", None);
    // `hoist plan` says so before anything is tried.
    let plan = w.hoist(&["plan"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("cannot be applied") && plan.contains("not signed"),
        "{plan}"
    );
    assert_refused(&w, &c2, "not signed", "v1", &["v1"]);

    // Signed, by a key that is not allowed.
    w.manifest("web", "v2", &url2, &sha2, "hooks:\n  after_activate: []\n");
    let c3 = commit_signed(&w, "web v2, signed by a stranger", Some(&stranger));
    assert_refused(&w, &c3, "not in the allowed signers", "v1", &["v1"]);

    // A commit whose signature was copied from a good commit onto other
    // content (a forged commit object): the signature does not verify.
    let forged = forge_commit(&w, &c1);
    assert_refused(&w, &forged, "does not verify", "v1", &["v1"]);

    // Signed by the deployer: applied.
    w.manifest("web", "v2", &url2, &sha2, "");
    let c4 = commit_signed(&w, "web v2, signed", Some(&deployer));
    w.once(0);
    assert_eq!(w.final_status(&c4).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
}

/// Writes a commit object carrying `good`'s signature over a different tree
/// (the current manifests with web on a release that was never signed off),
/// and pushes it.
fn forge_commit(w: &World, good: &str) -> String {
    let work = w.path("work");
    let raw = git(&work, &["cat-file", "commit", good]);
    let (url, sha) = w.make_release("v9-evil", false, &[]);
    w.manifest("web", "v9-evil", &url, &sha, "");
    git(&work, &["add", "-A"]);
    let tree = git(&work, &["write-tree"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let mut lines: Vec<String> = Vec::new();
    for l in raw.lines() {
        if l.starts_with("tree ") {
            lines.push(format!("tree {tree}"));
        } else if l.starts_with("parent ") {
            lines.push(format!("parent {head}"));
        } else {
            lines.push(l.to_string());
        }
    }
    if !raw.lines().any(|l| l.starts_with("parent ")) {
        lines.insert(1, format!("parent {head}"));
    }
    let obj = w.path("forged-commit");
    std::fs::write(&obj, lines.join("\n") + "\n").unwrap();
    let forged = git(
        &work,
        &["hash-object", "-t", "commit", "-w", obj.to_str().unwrap()],
    );
    git(&work, &["reset", "-q", "--hard", &forged]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    forged
}

/// A minisign key pair in `dir`; returns (public key line, secret key path).
fn minisign_key(w: &World, name: &str) -> (String, PathBuf) {
    let pubf = w.path(&format!("{name}.pub"));
    let sec = w.path(&format!("{name}.key"));
    run(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pubf)
        .arg("-s")
        .arg(&sec));
    let text = std::fs::read_to_string(&pubf).unwrap();
    (text.lines().nth(1).unwrap().trim().to_string(), sec)
}

fn minisign_sign(sec: &Path, file: &Path, sig: &Path) {
    run(Command::new("minisign")
        .args(["-S", "-s"])
        .arg(sec)
        .arg("-m")
        .arg(file)
        .arg("-x")
        .arg(sig));
}

/// The manifest of `release`, with `signature_url` naming the file `sig`.
fn signed_manifest(w: &World, release: &str, url: &str, sha: &str, sig: Option<&Path>) {
    let port = w.app_port;
    let sig = sig
        .map(|s| format!("  signature_url: file://{}\n", s.display()))
        .unwrap_or_default();
    std::fs::write(
        w.path("work/apps/web.yaml"),
        format!(
            "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\n{sig}pm2:\n  - name: web\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 15s\n  stable_for: 1s\n"
        ),
    )
    .unwrap();
}

#[test]
fn only_artifacts_signed_by_a_trusted_key_are_unpacked() {
    let mut w = World::new();
    let (trusted, sec) = minisign_key(&w, "release-key");
    let (_, other_sec) = minisign_key(&w, "other-key");
    w.extra_config = format!("storage:\n  trusted_keys:\n    - {trusted}\n");
    w.write_config();

    let (url1, sha1) = w.make_release("v1", true, &[]);
    let file1 = PathBuf::from(url1.trim_start_matches("file://"));
    let sig1 = w.path("store/v1.minisig");
    minisign_sign(&sec, &file1, &sig1);
    signed_manifest(&w, "v1", &url1, &sha1, Some(&sig1));
    let c1 = w.commit("web v1, signed");
    w.once(0);
    assert_eq!(w.final_status(&c1).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    let (url2, sha2) = w.make_release("v2", true, &[]);
    let file2 = PathBuf::from(url2.trim_start_matches("file://"));

    // Refused, each changing nothing: no signature_url at all; signed by a
    // key that is not trusted; the trusted key's signature of another file
    // (v1's), which does not match; a signature URL that does not exist.
    let sig_other = w.path("store/v2-other.minisig");
    minisign_sign(&other_sec, &file2, &sig_other);
    let missing = w.path("store/missing.minisig");
    for (sig, change, expect) in [
        (None, "web v2 without a signature", "signature"),
        (
            Some(&sig_other),
            "web v2 signed by another key",
            "signature",
        ),
        (Some(&sig1), "web v2 with v1's signature", "signature"),
        (
            Some(&missing),
            "web v2 with a missing signature",
            "does not exist",
        ),
    ] {
        signed_manifest(&w, "v2", &url2, &sha2, sig.map(PathBuf::as_path));
        let c = w.commit(change);
        assert_refused(&w, &c, expect, "v1", &["v1"]);
        assert!(w.leftovers("web").is_empty(), "{change}");
    }

    // Properly signed: deployed.
    let sig2 = w.path("store/v2.minisig");
    minisign_sign(&sec, &file2, &sig2);
    signed_manifest(&w, "v2", &url2, &sha2, Some(&sig2));
    let c = w.commit("web v2, signed");
    w.once(0);
    assert_eq!(w.final_status(&c).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
}

/// Commits and pushes, signed with `key`, with committer (and author) date
/// `date` (git's `@<unix> +0000` form).
fn commit_signed_at(w: &World, msg: &str, key: &Path, date: &str) -> String {
    let work = w.path("work");
    git(&work, &["add", "-A"]);
    let signing = format!("user.signingkey={}", key.display());
    run(Command::new("git")
        .args(["-c", "gpg.format=ssh", "-c", &signing])
        .args(["commit", "-q", "-S", "--allow-empty", "-m", msg])
        .current_dir(&work)
        .env("GIT_AUTHOR_NAME", "CI")
        .env("GIT_AUTHOR_EMAIL", "ci@example.com")
        .env("GIT_COMMITTER_NAME", "CI")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date));
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(&work, &["rev-parse", "HEAD"])
}

/// Whether `git verify-commit` (ssh-keygen underneath) accepts the commit
/// with the same allowed_signers file: hoist must agree with it.
fn git_accepts(w: &World, commit: &str) -> bool {
    let file = format!(
        "gpg.ssh.allowedSignersFile={}",
        w.path("allowed_signers").display()
    );
    Command::new("git")
        .args(["-c", &file, "verify-commit", commit])
        .current_dir(w.path("work"))
        .output()
        .expect("git runs")
        .status
        .success()
}

#[test]
fn signers_are_held_to_their_validity_period_and_namespaces() {
    let w = World::new();
    let deployer = ssh_key(&w, "deployer");
    let successor = ssh_key(&w, "successor");
    let filesigner = ssh_key(&w, "filesigner");
    // deployer's key is retired at the start of 2026, successor's starts
    // then; filesigner may sign files, not commits.
    std::fs::write(
        w.path("allowed_signers"),
        format!(
            "deployer@example.com namespaces=\"git\",valid-before=\"20260101Z\" {}\n\
             successor@example.com valid-after=\"20260101000000Z\" {}\n\
             files@example.com namespaces=\"file\" {}\n",
            public(&deployer),
            public(&successor),
            public(&filesigner)
        ),
    )
    .unwrap();
    set_repo_key(
        &w,
        &format!(
            "allowed_signers_file: {}",
            w.path("allowed_signers").display()
        ),
    );

    let (url1, sha1) = w.make_release("v1", false, &[]);
    w.manifest("web", "v1", &url1, &sha1, "");
    // 2025-06-01: within deployer's period.
    let c1 = commit_signed_at(&w, "web v1", &deployer, "@1748736000 +0000");
    assert!(git_accepts(&w, &c1));
    w.once(0);
    assert_eq!(w.final_status(&c1).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    let (url2, sha2) = w.make_release("v2", false, &[]);
    w.manifest("web", "v2", &url2, &sha2, "");
    // 2026-03-01: deployer's key expired two months before.
    let c2 = commit_signed_at(
        &w,
        "web v2 by the retired key",
        &deployer,
        "@1772323200 +0000",
    );
    assert!(!git_accepts(&w, &c2));
    assert_refused(&w, &c2, "expired at 2026-01-01T00:00:00Z", "v1", &["v1"]);
    let (_, desc) = w.final_status(&c2).unwrap();
    assert!(!desc.contains('\n'), "{desc:?}");
    assert!(desc.contains("deployer@example.com"), "{desc:?}");
    let plan = w.hoist(&["plan"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.lines().count(), 1, "{plan}");
    assert!(
        plan.contains("cannot be applied") && plan.contains("expired"),
        "{plan}"
    );

    // 2025-12-31T23:00Z: before successor's period starts.
    w.manifest("web", "v2", &url2, &sha2, "hooks:\n  after_activate: []\n");
    let c3 = commit_signed_at(&w, "web v2, too early", &successor, "@1767222000 +0000");
    assert!(!git_accepts(&w, &c3));
    assert_refused(
        &w,
        &c3,
        "is valid only from 2026-01-01T00:00:00Z",
        "v1",
        &["v1"],
    );

    // A key allowed for another namespace only.
    w.manifest("web", "v2", &url2, &sha2, "");
    let c4 = commit_signed_at(
        &w,
        "web v2 by the file key",
        &filesigner,
        "@1772323200 +0000",
    );
    assert!(!git_accepts(&w, &c4));
    assert_refused(
        &w,
        &c4,
        "may sign only in namespaces \"file\"",
        "v1",
        &["v1"],
    );

    // The successor, within its period: applied.
    w.manifest("web", "v2", &url2, &sha2, "hooks:\n  after_activate: []\n");
    let c5 = commit_signed_at(&w, "web v2", &successor, "@1772323200 +0000");
    assert!(git_accepts(&w, &c5));
    w.once(0);
    assert_eq!(w.final_status(&c5).unwrap().0, "success");
    assert_eq!(w.app_says().as_deref(), Some("v2"));
}
