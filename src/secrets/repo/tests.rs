use super::*;
use crate::secrets::Recipient;
use age::secrecy::ExposeSecret;

const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

struct Key {
    identity: Identity,
    public: String,
}

fn key(dir: &Path, name: &str) -> Key {
    let k = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", k.to_string().expose_secret())).unwrap();
    Key {
        identity: Identity::load(&path).unwrap(),
        public: k.to_public().to_string(),
    }
}

/// A config repo: `web` (targets label web) and `api` (every host, one
/// `.env` shared by all environments).
struct Repo {
    dir: tempfile::TempDir,
    admin: Key,
    hosts: Vec<Key>,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).unwrap();
        let admin = key(&keys, "admin");
        let hosts = (1..=4).map(|i| key(&keys, &format!("host{i}"))).collect();
        let r = Repo { dir, admin, hosts };
        r.write(
            "apps/web.yaml",
            &format!(
                "release: v1\nartifact:\n  url: file:///x.tar.zst\n  sha256: {SHA}\npm2:\n  - name: web\n    script: s.js\ntargets:\n  labels: [web]\nsecrets:\n  - from: secrets/{{environment}}/web.env.age\n    to: .env\n"
            ),
        );
        r.write(
            "apps/api.yaml",
            &format!(
                "release: v1\nartifact:\n  url: file:///x.tar.zst\n  sha256: {SHA}\npm2:\n  - name: api\n    script: s.js\nsecrets:\n  - from: secrets/shared.env.age\n    to: config/.env\n"
            ),
        );
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// production: hosts 1 and 2 (web), 3 (db); staging: host 4 (web).
    fn inventories(&self, production_hosts: &str) {
        let h = |i: usize| &self.hosts[i].public;
        self.write(
            "fleet/production.yaml",
            &format!(
                "hosts:\n{production_hosts}admins:\n  - \"{}\"\n",
                self.admin.public
            ),
        );
        self.write(
            "fleet/staging.yaml",
            &format!(
                "hosts:\n  stg-1: {{ labels: [web], key: \"{}\" }}\nadmins:\n  - \"{}\"\n",
                h(3),
                self.admin.public
            ),
        );
    }

    fn default_production(&self) -> String {
        format!(
            "  web-1: {{ labels: [web], key: \"{}\" }}\n  web-2: {{ labels: [web], key: \"{}\" }}\n  db-1: {{ labels: [db], key: \"{}\" }}\n",
            self.hosts[0].public, self.hosts[1].public, self.hosts[2].public
        )
    }

    fn repo(&self) -> ConfigRepo {
        ConfigRepo::new(self.dir.path(), "apps")
    }

    /// Seals `text` into `rel` the way `hoist secrets seal` would.
    fn seal_to(&self, rel: &str, keys: &[&str], text: &str) {
        let mut set = RecipientSet::default();
        for (i, k) in keys.iter().enumerate() {
            set.add(Recipient::new(&format!("k{i}"), k).unwrap());
        }
        self.write(rel, &seal(&set, text.as_bytes()).unwrap());
    }

    fn opens(&self, who: &Key, rel: &str) -> Option<String> {
        let bytes = std::fs::read(self.path(rel)).unwrap();
        open(&who.identity, rel, &bytes)
            .ok()
            .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
    }
}

#[test]
fn files_are_named_per_environment_and_sealed_to_the_union_of_their_users() {
    let r = Repo::new();
    r.inventories(&r.default_production());
    let repo = r.repo();
    let apps = repo.manifests().unwrap();
    let invs = repo.inventories().unwrap();
    let files = repo.sealed_files(&apps, &invs);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "secrets/production/web.env.age",
            "secrets/shared.env.age",
            "secrets/staging/web.env.age"
        ]
    );
    let names_of = |rel: &str| -> Vec<String> {
        repo.recipients_of(&files[rel], &apps, &invs)
            .unwrap()
            .recipients()
            .iter()
            .map(|r| r.name.clone())
            .collect()
    };
    assert_eq!(
        names_of("secrets/production/web.env.age"),
        ["web-1", "web-2", "admins[0]"]
    );
    assert_eq!(
        names_of("secrets/staging/web.env.age"),
        ["stg-1", "admins[0]"]
    );
    // api runs everywhere, and its one file serves both environments.
    assert_eq!(
        names_of("secrets/shared.env.age"),
        ["db-1", "web-1", "web-2", "admins[0]", "stg-1"]
    );
    let all = recipients_for_env(&repo, "production", None).unwrap();
    assert_eq!(all.len(), 4);
    let web = recipients_for_env(&repo, "production", Some("web")).unwrap();
    assert_eq!(web.len(), 3);
    let e = recipients_for_env(&repo, "prod", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no inventory fleet/prod.yaml"), "{e}");
    let e = recipients_for_env(&repo, "production", Some("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no manifest apps/nope.yaml"), "{e}");
}

#[test]
fn rekey_reseals_only_what_changed_and_says_what() {
    let r = Repo::new();
    r.inventories(&r.default_production());
    let repo = r.repo();
    let p = |i: usize| r.hosts[i].public.as_str();
    let admin = r.admin.public.as_str();
    r.seal_to(
        "secrets/production/web.env.age",
        &[p(0), p(1), admin],
        "WEB=prod\n",
    );
    r.seal_to("secrets/staging/web.env.age", &[p(3), admin], "WEB=stg\n");
    r.seal_to(
        "secrets/shared.env.age",
        &[p(2), p(0), p(1), admin, p(3)],
        "API=1\n",
    );
    let before: Vec<Vec<u8>> = [
        "secrets/production/web.env.age",
        "secrets/staging/web.env.age",
        "secrets/shared.env.age",
    ]
    .iter()
    .map(|f| std::fs::read(r.path(f)).unwrap())
    .collect();

    // Nothing changed: every file byte for byte as it was.
    let report = rekey(&repo, &r.admin.identity).unwrap();
    assert!(report.resealed.is_empty(), "{report:?}");
    assert_eq!(report.unchanged.len(), 3);
    assert!(report.failed.is_empty());
    for (f, b) in [
        "secrets/production/web.env.age",
        "secrets/staging/web.env.age",
        "secrets/shared.env.age",
    ]
    .iter()
    .zip(&before)
    {
        assert_eq!(&std::fs::read(r.path(f)).unwrap(), b, "{f}");
    }

    // web-3 joins production (a web host), web-2 leaves.
    let joined = format!(
        "  web-1: {{ labels: [web], key: \"{}\" }}\n  web-3: {{ labels: [web], key: \"{}\" }}\n  db-1: {{ labels: [db], key: \"{}\" }}\n",
        p(0),
        p(3),
        p(2)
    );
    r.inventories(&joined);
    let report = rekey(&repo, &r.admin.identity).unwrap();
    let resealed: Vec<(&str, &str)> = report
        .resealed
        .iter()
        .map(|(f, w)| (f.as_str(), w.as_str()))
        .collect();
    assert_eq!(
        resealed,
        [
            (
                "secrets/production/web.env.age",
                "re-sealed to 3 recipients (added web-3; removed 1)"
            ),
            (
                "secrets/shared.env.age",
                // stg-1 and web-3 share a key: one recipient.
                "re-sealed to 4 recipients (removed 1)"
            ),
        ]
    );
    assert_eq!(report.unchanged, ["secrets/staging/web.env.age"]);
    assert_eq!(
        std::fs::read(r.path("secrets/staging/web.env.age")).unwrap(),
        before[1]
    );
    // The joined host opens; the one that left does not; plaintext kept.
    assert_eq!(
        r.opens(&r.hosts[3], "secrets/production/web.env.age")
            .as_deref(),
        Some("WEB=prod\n")
    );
    assert_eq!(r.opens(&r.hosts[1], "secrets/production/web.env.age"), None);
    assert_eq!(
        r.opens(&r.hosts[0], "secrets/shared.env.age").as_deref(),
        Some("API=1\n")
    );
    // And a second run has nothing to do.
    let again = rekey(&repo, &r.admin.identity).unwrap();
    assert!(again.resealed.is_empty(), "{again:?}");
}

#[test]
fn rekey_handles_foreign_files_and_failures_file_by_file() {
    let r = Repo::new();
    r.inventories(&r.default_production());
    let repo = r.repo();
    let admin = r.admin.public.as_str();
    // Sealed by another tool: no recipient list, so re-sealed once.
    let foreign = {
        let rcpt: age::x25519::Recipient = admin.parse().unwrap();
        age::encrypt(&rcpt, b"WEB=prod\n").unwrap()
    };
    std::fs::create_dir_all(r.path("secrets/production")).unwrap();
    std::fs::write(r.path("secrets/production/web.env.age"), &foreign).unwrap();
    // Not openable by the admin, and its recipients are stale: fails.
    r.seal_to(
        "secrets/staging/web.env.age",
        &[&r.hosts[3].public],
        "WEB=stg\n",
    );
    // secrets/shared.env.age is missing.
    let report = rekey(&repo, &r.admin.identity).unwrap();
    assert_eq!(report.resealed.len(), 1, "{report:?}");
    assert_eq!(report.resealed[0].0, "secrets/production/web.env.age");
    assert!(report.resealed[0].1.contains("another tool"), "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report.failed.iter().any(|f| f.starts_with(
            "secrets/shared.env.age (named by api in production, api in staging) does not exist"
        )),
        "{report:?}"
    );
    assert!(
        report
            .failed
            .iter()
            .any(|f| f
                .starts_with("secrets/staging/web.env.age cannot be opened: it is not sealed to")),
        "{report:?}"
    );
    assert_eq!(
        r.opens(&r.hosts[0], "secrets/production/web.env.age")
            .as_deref(),
        Some("WEB=prod\n")
    );
    // The one it could not open is left as it was.
    assert_eq!(
        r.opens(&r.hosts[3], "secrets/staging/web.env.age")
            .as_deref(),
        Some("WEB=stg\n")
    );
}

#[test]
fn edit_reseals_changed_plaintext_and_leaves_the_rest_alone() {
    let r = Repo::new();
    r.inventories(&r.default_production());
    let repo = r.repo();
    let file = r.path("secrets/production/web.env.age");
    // Sealed to the admin only at first: edit re-seals to the manifest's users.
    r.seal_to(
        "secrets/production/web.env.age",
        &[&r.admin.public],
        "A=1\n",
    );
    let recipients = recipients_for_edit(&repo, &file, None, None).unwrap();
    assert_eq!(recipients.len(), 3);

    // An editor that looks at where it is asked to edit, and changes nothing.
    let log = r.path("editor.log");
    let look = format!(
        "f() {{ stat -c '%a %n' \"$1\" \"$(dirname \"$1\")\" > {}; }}; f",
        log.display()
    );
    let before = std::fs::read(&file).unwrap();
    assert_eq!(
        edit(&repo, &file, &r.admin.identity, &recipients, &look).unwrap(),
        EditOutcome::Unchanged
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let seen = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert!(
        lines[0].starts_with("600 ") && lines[0].ends_with("/web.env"),
        "{seen}"
    );
    assert!(
        lines[1].starts_with("700 ") && lines[1].contains("hoist-edit-"),
        "{seen}"
    );
    let tmp = PathBuf::from(lines[1].split_once(' ').unwrap().1);
    assert!(!tmp.exists(), "the private directory is removed");

    // A failing editor writes nothing.
    let e = edit(&repo, &file, &r.admin.identity, &recipients, "false").unwrap_err();
    assert!(e.to_string().contains("left as it was"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // A real change is re-sealed to the recipients.
    assert_eq!(
        edit(
            &repo,
            &file,
            &r.admin.identity,
            &recipients,
            "sed -i s/A=1/A=2/"
        )
        .unwrap(),
        EditOutcome::Resealed(3)
    );
    for who in [&r.admin, &r.hosts[0], &r.hosts[1]] {
        assert_eq!(
            r.opens(who, "secrets/production/web.env.age").as_deref(),
            Some("A=2\n")
        );
    }
    assert_eq!(r.opens(&r.hosts[2], "secrets/production/web.env.age"), None);
    // Not for someone who cannot open it.
    let e = edit(&repo, &file, &r.hosts[2].identity, &recipients, "true").unwrap_err();
    assert!(e.to_string().contains("not sealed to"), "{e}");
}

#[test]
fn edit_needs_to_know_whom_to_seal_to() {
    let r = Repo::new();
    r.inventories(&r.default_production());
    let repo = r.repo();
    r.seal_to("secrets/other.age", &[&r.admin.public], "x");
    let e = recipients_for_edit(&repo, &r.path("secrets/other.age"), None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no manifest in apps/ names secrets/other.age"),
        "{e}"
    );
    assert!(e.contains("--env"), "{e}");
    let set =
        recipients_for_edit(&repo, &r.path("secrets/other.age"), Some("staging"), None).unwrap();
    assert_eq!(set.len(), 2);
    let set = recipients_for_edit(
        &repo,
        &r.path("secrets/other.age"),
        Some("production"),
        Some("web"),
    )
    .unwrap();
    assert_eq!(set.len(), 3);
    assert!(recipients_for_edit(&repo, &r.path("secrets/other.age"), None, Some("web")).is_err());
    let outside = tempfile::NamedTempFile::new().unwrap();
    let e = recipients_for_edit(&repo, outside.path(), None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not inside the config repo"), "{e}");
}

#[test]
fn check_names_the_manifest_line_and_the_environment() {
    let r = Repo::new();
    let repo = r.repo();
    let apps = repo.manifests().unwrap();
    // No inventory: nothing is checked, but the user is told.
    let report = check(&repo, &apps);
    assert!(report.errors.is_empty());
    assert_eq!(report.warnings.len(), 2, "{report:?}");

    r.inventories(&r.default_production());
    let p = |i: usize| r.hosts[i].public.as_str();
    let admin = r.admin.public.as_str();
    r.seal_to("secrets/production/web.env.age", &[p(0), p(1), admin], "x");
    r.write(
        "secrets/staging/web.env.age",
        "WEB=plain text committed by mistake\n",
    );
    // shared.env.age: missing.
    let report = check(&repo, &apps);
    assert_eq!(
        report.errors,
        [
            "apps/api.yaml:9: secrets[0].from: secrets/shared.env.age does not exist (environment production has an inventory, fleet/production.yaml)",
            "apps/api.yaml:9: secrets[0].from: secrets/shared.env.age does not exist (environment staging has an inventory, fleet/staging.yaml)",
            "apps/web.yaml:11: secrets[0].from: secrets/staging/web.env.age cannot be used: it is not an age file (age-encryption.org/v1, binary or armored); seal the plaintext with `hoist secrets seal` (environment staging has an inventory, fleet/staging.yaml)",
        ]
    );
    assert!(!report.errors.iter().any(|e| e.contains("plain text")));

    // A symlink is refused even if it points at a good file.
    r.seal_to("secrets/staging/web.env.age", &[p(3), admin], "x");
    std::os::unix::fs::symlink("staging/web.env.age", r.path("secrets/shared.env.age")).unwrap();
    let report = check(&repo, &apps);
    assert_eq!(report.errors.len(), 2, "{report:?}");
    assert!(report.errors[0].contains("is a symlink"), "{report:?}");

    // Valid, with a warning for a file whose recipients went stale.
    std::fs::remove_file(r.path("secrets/shared.env.age")).unwrap();
    r.seal_to(
        "secrets/shared.env.age",
        &[p(2), p(0), p(1), admin, p(3)],
        "x",
    );
    let report = check(&repo, &apps);
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(report.warnings.is_empty(), "{report:?}");
    r.inventories(&format!(
        "{}  web-9: {{ labels: [web] }}\n",
        r.default_production().replace(p(1), &r.admin.public)
    ));
    let report = check(&repo, &apps);
    assert!(report.errors.is_empty(), "{report:?}");
    let w = report.warnings.join("\n");
    assert!(
        w.contains(
            "secrets/production/web.env.age is still sealed to 1 key(s) no longer in the inventory"
        ),
        "{w}"
    );
    assert!(w.contains("host web-9 has no key"), "{w}");

    // An inventory that does not parse is an error.
    r.write(
        "fleet/production.yaml",
        "hosts:\n  web-1: { key: \"age1nope\" }\n",
    );
    let report = check(&repo, &apps);
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].starts_with("fleet/production.yaml:2:"),
        "{report:?}"
    );
}
