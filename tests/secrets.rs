//! The producer side of sealed secrets, through the real `hoist` binary and
//! against the reference tool (Debian's `age` and `age-keygen`): `hoist
//! keygen`, `hoist secrets seal|open|edit|rekey` and the sealed-secret rules
//! of `hoist check`, over a real config repo checkout in git.
//!
//! Both directions of interop are checked: hoist opens what `age -r`
//! sealed (X25519 and ssh-ed25519 recipients, armored and binary), and
//! `age -d -i` opens what `hoist secrets seal`, `edit` and `rekey` wrote.

mod common;

use common::{git, hoist_bin};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
const PLAIN: &str = "DATABASE_URL=postgres://web:correct-horse-battery@db/web\nAPI_TOKEN=s3cr3t\n";

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the tool runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// hoist with no host config (the manifest folder is then `apps`).
fn hoist(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(hoist_bin())
        .arg("--config")
        .arg(dir.join("no-host-config.yaml"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOIST_CONFIG"))
}

/// hoist with `input` on standard input.
fn hoist_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(hoist_bin())
        .arg("--config")
        .arg(dir.join("no-host-config.yaml"))
        .args(args)
        .current_dir(dir)
        .env_remove("HOIST_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hoist runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `age -d -i identity file`: the plaintext, or None when age refuses.
fn age_open(identity: &Path, file: &Path) -> Option<String> {
    let out = run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(file));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A key pair made by the reference tools: (private key file, public key).
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    ok(&run(Command::new("age-keygen").arg("-o").arg(&path)));
    let public = ok(&run(Command::new("age-keygen").arg("-y").arg(&path)));
    (path, public.trim().to_string())
}

fn ssh_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    ok(&run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// A config repo checkout in git: `apps/web.yaml` (targets label web) with
/// one sealed `.env` per environment, and `fleet/production.yaml`.
struct Repo {
    dir: tempfile::TempDir,
    /// (identity file, public key) of web-1 (age), web-2 (ssh-ed25519),
    /// db-1 (age), and the admin (age).
    web1: (PathBuf, String),
    web2: (PathBuf, String),
    db1: (PathBuf, String),
    admin: (PathBuf, String),
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("hoist-secrets-")
            .tempdir()
            .unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let web1 = age_key(&keys, "web-1");
        let web2 = ssh_key(&keys, "web-2");
        let db1 = age_key(&keys, "db-1");
        let admin = age_key(&keys, "admin");
        let r = Repo {
            dir,
            web1,
            web2,
            db1,
            admin,
        };
        let work = r.work();
        std::fs::create_dir_all(work.join("apps")).unwrap();
        std::fs::create_dir_all(work.join("secrets/production")).unwrap();
        std::fs::write(
            work.join("apps/web.yaml"),
            format!(
                "release: v1\nartifact:\n  url: file:///srv/store/web-v1.tar.zst\n  sha256: {SHA}\npm2:\n  - name: web\n    script: server.js\ntargets:\n  labels: [web]\nsecrets:\n  - from: secrets/{{environment}}/web.env.age\n    to: .env\n"
            ),
        )
        .unwrap();
        r.inventory(&[
            ("web-1", "web", Some(&r.web1.1)),
            ("web-2", "web", Some(&r.web2.1)),
            ("db-1", "db", Some(&r.db1.1)),
        ]);
        git(&work, &["init", "-q", "-b", "main"]);
        r
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn file(&self) -> PathBuf {
        self.work().join("secrets/production/web.env.age")
    }

    fn inventory(&self, hosts: &[(&str, &str, Option<&str>)]) {
        let mut text = "hosts:\n".to_string();
        for (name, label, key) in hosts {
            match key {
                Some(k) => text.push_str(&format!(
                    "  {name}: {{ labels: [{label}], key: \"{k}\" }}\n"
                )),
                None => text.push_str(&format!("  {name}: {{ labels: [{label}] }}\n")),
            }
        }
        text.push_str(&format!("admins:\n  - \"{}\"\n", self.admin.1));
        std::fs::create_dir_all(self.work().join("fleet")).unwrap();
        std::fs::write(self.work().join("fleet/production.yaml"), text).unwrap();
    }

    fn commit(&self, msg: &str) {
        git(&self.work(), &["add", "-A"]);
        git(&self.work(), &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    /// Paths git sees as changed since the last commit.
    fn changed(&self) -> Vec<String> {
        let changed = git(&self.work(), &["diff", "--name-only", "HEAD"]);
        let new = git(
            &self.work(),
            &["ls-files", "--others", "--exclude-standard"],
        );
        changed
            .lines()
            .chain(new.lines())
            .map(String::from)
            .collect()
    }

    fn seal(&self) {
        let out = hoist_stdin(
            &self.work(),
            &[
                "secrets",
                "seal",
                "--env",
                "production",
                "--app",
                "web",
                "-",
                "secrets/production/web.env.age",
            ],
            PLAIN.as_bytes(),
        );
        ok(&out);
    }
}

#[test]
fn keygen_writes_an_identity_the_reference_tool_reads() {
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("identity");
    let out = hoist(dir.path(), &["keygen", "-o", id.to_str().unwrap()]);
    let public = ok(&out).trim().to_string();
    assert!(public.starts_with("age1"), "{public}");
    assert!(
        stderr(&out).contains("fleet/<environment>.yaml"),
        "{}",
        stderr(&out)
    );
    let mode = std::fs::metadata(&id).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let age_says = ok(&run(Command::new("age-keygen").arg("-y").arg(&id)));
    assert_eq!(age_says.trim(), public);

    // Never over an existing key.
    let before = std::fs::read(&id).unwrap();
    let out = hoist(dir.path(), &["keygen", "-o", id.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&id).unwrap(), before);

    // Without -o: the host config's identity_file; none set is a config error.
    let config = dir.path().join("hoist.yaml");
    let second = dir.path().join("second");
    std::fs::write(
        &config,
        format!(
            "repo:\n  url: file:///srv/repo.git\nidentity_file: {}\n",
            second.display()
        ),
    )
    .unwrap();
    let out = run(Command::new(hoist_bin())
        .arg("--config")
        .arg(&config)
        .arg("keygen"));
    let second_public = ok(&out).trim().to_string();
    assert_eq!(
        ok(&run(Command::new("age-keygen").arg("-y").arg(&second))).trim(),
        second_public
    );
    std::fs::write(&config, "repo:\n  url: file:///srv/repo.git\n").unwrap();
    let out = run(Command::new(hoist_bin())
        .arg("--config")
        .arg(&config)
        .arg("keygen"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("sets no identity_file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hoist_opens_what_age_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let (age_id, age_pub) = age_key(dir.path(), "age-id");
    let (ssh_id, ssh_pub) = ssh_key(dir.path(), "ssh-id");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, PLAIN).unwrap();
    for (id, public, kind) in [
        (&age_id, &age_pub, "x25519"),
        (&ssh_id, &ssh_pub, "ssh-ed25519"),
    ] {
        for armor in [true, false] {
            let sealed = dir.path().join(format!("{kind}-{armor}.age"));
            let mut cmd = Command::new("age");
            cmd.arg("-r").arg(public);
            if armor {
                cmd.arg("-a");
            }
            ok(&run(cmd.arg("-o").arg(&sealed).arg(&plain)));
            let head = std::fs::read(&sealed).unwrap();
            assert_eq!(
                head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"),
                armor,
                "{kind}"
            );
            let out = hoist(
                dir.path(),
                &[
                    "secrets",
                    "open",
                    sealed.to_str().unwrap(),
                    "--identity",
                    id.to_str().unwrap(),
                ],
            );
            assert_eq!(ok(&out), PLAIN, "{kind}, armored {armor}");
            // The other key cannot open it, and says which key it tried.
            let other = if id == &age_id { &ssh_id } else { &age_id };
            let out = hoist(
                dir.path(),
                &[
                    "secrets",
                    "open",
                    sealed.to_str().unwrap(),
                    "--identity",
                    other.to_str().unwrap(),
                ],
            );
            assert_eq!(out.status.code(), Some(1));
            let err = stderr(&out);
            assert!(err.contains("is not sealed to"), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
    // Not an age file: named, and its content is not echoed.
    let out = hoist(
        dir.path(),
        &[
            "secrets",
            "open",
            plain.to_str().unwrap(),
            "--identity",
            age_id.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is not an age file"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[test]
fn age_opens_what_hoist_sealed_for_the_targeted_hosts_and_admins() {
    let r = Repo::new();
    r.inventory(&[
        ("web-1", "web", Some(&r.web1.1)),
        ("web-2", "web", Some(&r.web2.1)),
        ("web-3", "web", None),
        ("db-1", "db", Some(&r.db1.1)),
    ]);
    let out = hoist_stdin(
        &r.work(),
        &[
            "secrets",
            "seal",
            "--env",
            "production",
            "--app",
            "web",
            "-",
            "secrets/production/web.env.age",
        ],
        PLAIN.as_bytes(),
    );
    ok(&out);
    let err = stderr(&out);
    assert!(err.contains("host web-3 has no key"), "{err}");
    assert!(
        err.contains("3 recipient(s): web-1, web-2, admins[0]"),
        "{err}"
    );
    let text = std::fs::read_to_string(r.file()).unwrap();
    assert!(
        text.starts_with("-----BEGIN AGE ENCRYPTED FILE-----\n"),
        "{text}"
    );
    for who in [&r.web1.0, &r.web2.0, &r.admin.0] {
        assert_eq!(
            age_open(who, &r.file()).as_deref(),
            Some(PLAIN),
            "{}",
            who.display()
        );
    }
    // db-1 is not a web host.
    assert_eq!(age_open(&r.db1.0, &r.file()), None);

    // Without --app: every host of the environment; from a file.
    let plain = r.dir.path().join("plain");
    std::fs::write(&plain, PLAIN).unwrap();
    let all = r.work().join("secrets/new-dir/all.age");
    ok(&hoist(
        &r.work(),
        &[
            "secrets",
            "seal",
            "--env",
            "production",
            plain.to_str().unwrap(),
            all.to_str().unwrap(),
        ],
    ));
    assert_eq!(age_open(&r.db1.0, &all).as_deref(), Some(PLAIN));

    // Many recipients: the recipient-list stanza stays readable by age.
    let keys = r.dir.path().join("many");
    std::fs::create_dir(&keys).unwrap();
    let many: Vec<(PathBuf, String)> = (0..40).map(|i| age_key(&keys, &format!("h{i}"))).collect();
    let hosts: Vec<(String, String)> = many
        .iter()
        .enumerate()
        .map(|(i, (_, k))| (format!("h-{i}"), k.clone()))
        .collect();
    let list: Vec<(&str, &str, Option<&str>)> = hosts
        .iter()
        .map(|(n, k)| (n.as_str(), "web", Some(k.as_str())))
        .collect();
    r.inventory(&list);
    r.seal();
    assert_eq!(age_open(&many[39].0, &r.file()).as_deref(), Some(PLAIN));
    assert_eq!(age_open(&many[0].0, &r.file()).as_deref(), Some(PLAIN));

    // Usage errors exit 2.
    let out = hoist(
        &r.work(),
        &["secrets", "seal", "--env", "staging", "-", "x.age"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("fleet/staging.yaml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rekey_reseals_what_changed_and_leaves_the_rest_byte_for_byte() {
    let r = Repo::new();
    r.seal();
    // A second file, sealed by the reference tool to the admin only, named
    // by a second app in the same environment.
    std::fs::write(
        r.work().join("apps/api.yaml"),
        format!(
            "release: v1\nartifact:\n  url: file:///srv/store/api-v1.tar.zst\n  sha256: {SHA}\npm2:\n  - name: api\n    script: server.js\nsecrets:\n  - from: secrets/{{environment}}/api.key.age\n    to: config/api.key\n"
        ),
    )
    .unwrap();
    let api_plain = r.dir.path().join("api.key");
    std::fs::write(&api_plain, "KEY-123").unwrap();
    let api = r.work().join("secrets/production/api.key.age");
    ok(&run(Command::new("age")
        .args(["-a", "-r", &r.admin.1, "-o"])
        .arg(&api)
        .arg(&api_plain)));
    r.commit("sealed");
    let admin = r.admin.0.to_str().unwrap().to_string();

    // The api file lists no recipients (age wrote it): re-sealed once to
    // every host (api targets all) plus the admin; web's file untouched.
    let out = hoist(&r.work(), &["secrets", "rekey", "--identity", &admin]);
    let said = ok(&out);
    assert!(
        said.contains("secrets/production/api.key.age: re-sealed to 4 recipients"),
        "{said}"
    );
    assert!(said.contains("1 re-sealed, 1 already sealed"), "{said}");
    assert_eq!(r.changed(), ["secrets/production/api.key.age"]);
    for who in [&r.web1.0, &r.web2.0, &r.db1.0, &r.admin.0] {
        assert_eq!(age_open(who, &api).as_deref(), Some("KEY-123"));
    }
    r.commit("rekeyed");

    // Nothing changed: nothing written, git sees no diff.
    let said = ok(&hoist(
        &r.work(),
        &["secrets", "rekey", "--identity", &admin],
    ));
    assert!(said.contains("0 re-sealed, 2 already sealed"), "{said}");
    assert!(r.changed().is_empty(), "{:?}", r.changed());

    // web-3 joins (with a key hoist keygen wrote), web-2 leaves.
    let web3_id = r.dir.path().join("keys/web-3");
    let web3 = ok(&hoist(
        r.dir.path(),
        &["keygen", "-o", web3_id.to_str().unwrap()],
    ))
    .trim()
    .to_string();
    r.inventory(&[
        ("web-1", "web", Some(&r.web1.1)),
        ("web-3", "web", Some(&web3)),
        ("db-1", "db", Some(&r.db1.1)),
    ]);
    r.commit("web-3 joins, web-2 leaves");
    let said = ok(&hoist(
        &r.work(),
        &["secrets", "rekey", "--identity", &admin],
    ));
    assert!(
        said.contains(
            "secrets/production/web.env.age: re-sealed to 3 recipients (added web-3; removed 1)"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "secrets/production/api.key.age: re-sealed to 4 recipients (added web-3; removed 1)"
        ),
        "{said}"
    );
    let mut changed = r.changed();
    changed.sort();
    assert_eq!(
        changed,
        [
            "secrets/production/api.key.age",
            "secrets/production/web.env.age"
        ]
    );
    assert_eq!(age_open(&web3_id, &r.file()).as_deref(), Some(PLAIN));
    assert_eq!(age_open(&r.web2.0, &r.file()), None);
    assert_eq!(age_open(&r.web1.0, &r.file()).as_deref(), Some(PLAIN));

    // With an identity that opens only some files, rekey re-seals those,
    // names the others and exits 1.
    r.commit("rekeyed again");
    r.inventory(&[("web-1", "web", Some(&r.web1.1))]);
    r.commit("only web-1 left");
    let out = hoist(
        &r.work(),
        &["secrets", "rekey", "--identity", r.db1.0.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("secrets/production/web.env.age cannot be opened: it is not sealed to"),
        "{err}"
    );
    assert_eq!(r.changed(), ["secrets/production/api.key.age"]);
    assert_eq!(age_open(&r.db1.0, &api), None);
    assert_eq!(age_open(&r.web1.0, &api).as_deref(), Some("KEY-123"));
}

#[test]
fn edit_reseals_through_the_editor_and_writes_nothing_when_unchanged() {
    let r = Repo::new();
    r.seal();
    r.commit("sealed");
    let admin = r.admin.0.to_str().unwrap().to_string();
    let file = "secrets/production/web.env.age";

    // An editor that changes nothing, and notes where it was asked to edit.
    let log = r.dir.path().join("editor.log");
    let look = r.dir.path().join("look.sh");
    std::fs::write(
        &look,
        format!(
            "#!/bin/sh\nstat -c '%a %n' \"$1\" \"$(dirname \"$1\")\" > {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&look, std::fs::Permissions::from_mode(0o755)).unwrap();
    let edit = |editor: &str, extra: &[&str]| {
        let mut args = vec!["secrets", "edit", file, "--identity", admin.as_str()];
        args.extend_from_slice(extra);
        run(Command::new(hoist_bin())
            .arg("--config")
            .arg(r.dir.path().join("none.yaml"))
            .args(&args)
            .current_dir(r.work())
            .env_remove("VISUAL")
            .env("EDITOR", editor))
    };
    let out = edit(look.to_str().unwrap(), &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("unchanged; nothing written"),
        "{}",
        stderr(&out)
    );
    assert!(r.changed().is_empty());
    let seen = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].starts_with("600 ") && lines[0].ends_with("/web.env"),
        "{seen}"
    );
    assert!(lines[1].starts_with("700 "), "{seen}");
    let tmp = PathBuf::from(lines[1].split_once(' ').unwrap().1);
    assert!(!tmp.exists(), "{} is left behind", tmp.display());

    // A real edit: re-sealed to the manifest's recipients, found from the
    // file's path.
    let out = edit("sed -i s/s3cr3t/n3w-s3cr3t/", &[]);
    ok(&out);
    assert!(stderr(&out).contains("re-sealed"), "{}", stderr(&out));
    assert_eq!(r.changed(), [file]);
    let want = PLAIN.replace("s3cr3t", "n3w-s3cr3t");
    for who in [&r.web1.0, &r.web2.0, &r.admin.0] {
        assert_eq!(age_open(who, &r.file()).as_deref(), Some(want.as_str()));
    }
    assert_eq!(age_open(&r.db1.0, &r.file()), None);
    r.commit("edited");

    // --env without --app: every host of the environment.
    ok(&edit("sed -i s/n3w/newer/", &["--env", "production"]));
    assert_eq!(
        age_open(&r.db1.0, &r.file()).as_deref(),
        Some(PLAIN.replace("s3cr3t", "newer-s3cr3t").as_str())
    );
    // An editor that fails leaves the file alone.
    r.commit("edited again");
    let out = edit("false", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was left as it was"),
        "{}",
        stderr(&out)
    );
    assert!(r.changed().is_empty());
}

#[test]
fn check_refuses_missing_non_age_files_and_unsafe_paths() {
    let r = Repo::new();
    let check = || hoist(r.dir.path(), &["check", r.work().to_str().unwrap()]);

    // production has an inventory, and web's file for it is missing.
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("apps/web.yaml:11: secrets[0].from: secrets/production/web.env.age does not exist (environment production has an inventory, fleet/production.yaml)"),
        "{err}"
    );

    // Plaintext committed by mistake.
    std::fs::write(r.file(), PLAIN).unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("is not an age file"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");

    // Sealed: valid.
    r.seal();
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ok(&out).contains("valid"));

    // An environment without an inventory is not checked; one with an
    // inventory is.
    std::fs::write(
        r.work().join("fleet/staging.yaml"),
        format!("hosts: {{}}\nadmins: [\"{}\"]\n", r.admin.1),
    )
    .unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("secrets/staging/web.env.age does not exist"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(r.work().join("fleet/staging.yaml")).unwrap();

    // An unsafe `to`.
    let manifest = r.work().join("apps/web.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for bad in ["../../etc/cron.d/x", "/etc/passwd"] {
        std::fs::write(&manifest, text.replace("to: .env", &format!("to: {bad}"))).unwrap();
        let out = check();
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(stderr(&out).contains("apps/web.yaml"), "{}", stderr(&out));
    }
}

#[test]
fn an_admin_with_an_ssh_rsa_key_opens_and_rekeys() {
    let r = Repo::new();
    let keys = r.dir.path().join("keys");
    let rsa = keys.join("rsa-admin");
    ok(&run(Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "bob", "-f"])
        .arg(&rsa)));
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let inventory = r.work().join("fleet/production.yaml");
    let text = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(&inventory, format!("{text}  - \"{}\"\n", rsa_pub.trim())).unwrap();
    r.seal();
    // The reference tool and hoist both open it with the RSA key.
    assert_eq!(age_open(&rsa, &r.file()).as_deref(), Some(PLAIN));
    let out = hoist(
        &r.work(),
        &[
            "secrets",
            "open",
            "secrets/production/web.env.age",
            "--identity",
            rsa.to_str().unwrap(),
        ],
    );
    assert_eq!(ok(&out), PLAIN);
    // The RSA admin can rekey after web-2 leaves.
    r.commit("sealed");
    let text = std::fs::read_to_string(&inventory).unwrap();
    let without_web2: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("web-2:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&inventory, without_web2).unwrap();
    let said = ok(&hoist(
        &r.work(),
        &["secrets", "rekey", "--identity", rsa.to_str().unwrap()],
    ));
    assert!(
        said.contains("re-sealed to 3 recipients (removed 1)"),
        "{said}"
    );
    assert_eq!(age_open(&r.web2.0, &r.file()), None);
    assert_eq!(age_open(&rsa, &r.file()).as_deref(), Some(PLAIN));
}
