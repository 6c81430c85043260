//! Every key of the host config, the app manifests and the inventories,
//! broken three ways: a value of the wrong type, the key written twice, and
//! the key misspelt. Each must be refused at the line of the key itself,
//! naming it, whatever else in the file looks alike.
//!
//! The documents below hold every key the binary accepts: a misspelt key's
//! error lists the keys serde expects at that place, and each of them must
//! be in the document. docs/configuration.md must document exactly those
//! keys, so the reference cannot fall behind the code.

use hoist::config::{ConfigError, HostConfig, parse_inventory, parse_manifest};
use std::collections::BTreeSet;
use std::path::Path;

const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

const HOST: &str = r#"host: web-1
labels: [web, eu-west]
environment: production
root: /srv/hoist
state_dir: /var/lib/hoist
keep_releases: 5
repo:
  url: https://git.example.com/acme/deploy.git
  branch: main
  path: apps
  poll_interval: 15s
  jitter: 3s
  token_file: /etc/hoist/git-token
  ssh_key_file: /etc/hoist/id_ed25519
  known_hosts_file: /etc/hoist/known_hosts
  allowed_signers_file: /etc/hoist/allowed_signers
storage:
  s3:
    endpoint: https://s3.example.com
    region: us-east-1
    access_key_id_file: /etc/hoist/s3-key-id
    secret_access_key_file: /etc/hoist/s3-secret
  trusted_keys: []
status:
  provider: github
  api_url: https://api.github.com
  repository: acme/deploy
  token_file: /etc/hoist/forge-token
  context: "hoist/{environment}/{host}"
  path: /var/lib/hoist/statuses.jsonl
pm2:
  command: pm2
  home: /home/deploy/.pm2
  user: hoist-apps
listen: 127.0.0.1:9107
allow_http: false
ca_file: /etc/hoist/ca.pem
webhook_secret_file: /etc/hoist/webhook-secret
identity_file: /etc/hoist/identity
limits:
  max_unpacked_size: 4GiB
  max_entries: 200000
"#;

const MANIFEST: &str = r#"release: "2026.11.27-3"
artifact:
  url: s3://acme-releases/web/web-2026.11.27-3.tar.zst
  sha256: 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b
  signature_url: s3://acme-releases/web/web-2026.11.27-3.tar.zst.minisig
targets:
  hosts: ["web-*"]
  labels: [web]
shared: [uploads/]
pm2:
  - name: web
    script: server.js
    instances: 2
    env: { PORT: "3000", NODE_ENV: production }
  - name: worker
    script: worker.js
health:
  http: http://127.0.0.1:3000/healthz
  timeout: 30s
  stable_for: 3s
hooks:
  before_activate: [[npm, run, migrate]]
  after_activate: []
keep_releases: 5
paused: false
secrets:
  - from: secrets/{environment}/web.env.age
    to: .env
rollout:
  waves:
    - labels: [canary]
      hosts: ["web-1"]
      bake: 10m
    - percent: 50
      bake: 5m
    - percent: 100
  max_failures: 0
  deadline: 30m
"#;

fn inventory() -> String {
    format!(
        "hosts:\n  web-1:\n    labels: [web, canary]\n    key: \"{AGE}\"\n  web-2:\n    labels: [web]\nadmins:\n  - \"{AGE}\"\n"
    )
}

/// One `key:` line of a document and where it sits.
#[derive(Debug, Clone)]
struct KeyLine {
    /// 0-based.
    line: usize,
    /// The column of the key (after any `- `).
    col: usize,
    dash: bool,
    key: String,
    /// What follows `key:` on the line, trimmed; empty for a block.
    value: String,
    /// `repo.url`, `pm2[0].name`.
    path: String,
    /// One past the last line of the key's block.
    end: usize,
}

fn key_lines(doc: &str) -> Vec<KeyLine> {
    let lines: Vec<&str> = doc.lines().collect();
    let col_of = |l: &str| {
        let spaces = l.len() - l.trim_start().len();
        if l.trim_start().starts_with("- ") {
            spaces + 2
        } else {
            spaces
        }
    };
    let mut out = Vec::new();
    // (column, path) of the enclosing keys and list items.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut counters: std::collections::HashMap<String, usize> = Default::default();
    for (i, l) in lines.iter().enumerate() {
        let spaces = l.len() - l.trim_start().len();
        let rest = l.trim_start();
        let dash = rest.starts_with("- ");
        let body = rest.strip_prefix("- ").unwrap_or(rest);
        let col = col_of(l);
        while stack
            .last()
            .is_some_and(|(c, _)| *c >= if dash { spaces } else { col })
        {
            stack.pop();
        }
        let parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
        let parent = if dash {
            let n = counters.entry(parent.clone()).or_default();
            let item = format!("{parent}[{n}]");
            *n += 1;
            stack.push((spaces, item.clone()));
            item
        } else {
            parent
        };
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        let path = if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        };
        let end = (i + 1..lines.len())
            .find(|&j| col_of(lines[j]) <= col)
            .unwrap_or(lines.len());
        stack.push((col, path.clone()));
        out.push(KeyLine {
            line: i,
            col,
            dash,
            key: key.to_string(),
            value: value.trim().to_string(),
            path,
            end,
        });
    }
    out
}

/// The document with the lines `from..to` replaced by `with`.
fn splice(doc: &str, from: usize, to: usize, with: &[String]) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<String> = lines[..from].iter().map(|s| s.to_string()).collect();
    out.extend(with.iter().cloned());
    out.extend(lines[to..].iter().map(|s| s.to_string()));
    out.join("\n") + "\n"
}

/// The key line rewritten with another key and value (the `- ` kept).
fn rewrite(doc: &str, k: &KeyLine, key: &str, value: &str) -> String {
    let line = doc.lines().nth(k.line).unwrap();
    let indent = &line[..k.col];
    let value = if value.is_empty() {
        String::new()
    } else {
        format!(" {value}")
    };
    format!("{indent}{key}:{value}")
}

/// Free-form mappings: pm2's own process keys and an env are not hoist's.
fn free_form(path: &str) -> bool {
    let in_pm2_entry =
        path.starts_with("pm2[") && !path.ends_with(".name") && !path.ends_with(".script");
    in_pm2_entry || path.contains(".env")
}

type Parse = fn(&str) -> Result<(), ConfigError>;

fn parse_host(text: &str) -> Result<(), ConfigError> {
    HostConfig::parse(Path::new("/etc/hoist/hoist.yaml"), text).map(|_| ())
}

fn parse_app(text: &str) -> Result<(), ConfigError> {
    parse_manifest(Path::new("apps/web.yaml"), text).map(|_| ())
}

fn parse_inv(text: &str) -> Result<(), ConfigError> {
    parse_inventory(Path::new("fleet/production.yaml"), text).map(|_| ())
}

/// The keys serde lists in an unknown-key error ("expected one of `a`, `b`").
fn expected_keys(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected ") else {
        return Vec::new();
    };
    message[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

/// Runs the three breakages on every key of `doc`; returns the keys the
/// binary accepts at each place, as found in the unknown-key errors.
fn break_every_key(name: &str, doc: &str, parse: Parse) -> Vec<String> {
    parse(doc).unwrap_or_else(|e| panic!("{name}: the full document must be valid: {e}"));
    let keys = key_lines(doc);
    assert!(keys.len() > 5, "{name}: {keys:?}");
    let mut failures = Vec::new();
    let mut check = |what: &str, k: &KeyLine, text: &str, want_line: usize, want_in_msg: &str| {
        match parse(text) {
            Ok(()) => failures.push(format!("{name} {what} {}: accepted\n{text}", k.path)),
            Err(e) => {
                if e.line != Some(want_line + 1) || !e.message.contains(want_in_msg) {
                    failures.push(format!(
                        "{name} {what} {}: want line {} naming {want_in_msg:?}, got {e}",
                        k.path,
                        want_line + 1
                    ));
                }
            }
        }
    };
    let mut accepted = Vec::new();
    for k in &keys {
        if free_form(&k.path) {
            continue;
        }
        let lines: Vec<&str> = doc.lines().collect();
        // A value of the wrong type: a block or a scalar gets a list, a list
        // gets a mapping; the block's own lines go with it.
        let wrong = if k.value.starts_with('[') && !k.path.starts_with("pm2[") {
            "{x: 1}"
        } else if k.value.is_empty() {
            "7"
        } else {
            "[x]"
        };
        let text = splice(doc, k.line, k.end, &[rewrite(doc, k, &k.key, wrong)]);
        check("wrong type", k, &text, k.line, &k.path);

        // The key written twice: its whole block again, right after it (a
        // list item's key without the `- `).
        let mut again: Vec<String> = lines[k.line..k.end].iter().map(|s| s.to_string()).collect();
        if k.dash {
            again[0] = format!("{}{}", " ".repeat(k.col), &lines[k.line][k.col..]);
        }
        let mut with: Vec<String> = lines[k.line..k.end].iter().map(|s| s.to_string()).collect();
        with.extend(again);
        let text = splice(doc, k.line, k.end, &with);
        check(
            "duplicate",
            k,
            &text,
            k.end,
            &format!("{} is written twice", k.path),
        );

        // A typo. Host names in an inventory are names, not keys; a pm2
        // entry takes pm2's own keys, so a misspelt `name` is reported as a
        // missing one (at the entry).
        let host_name =
            name == "inventory" && k.path.starts_with("hosts.") && k.path.matches('.').count() == 1;
        if host_name || k.path.starts_with("pm2[") {
            continue;
        }
        let typo = format!("{}x", k.key);
        let text = splice(doc, k.line, k.line + 1, &[rewrite(doc, k, &typo, &k.value)]);
        check("typo", k, &text, k.line, &typo);
        if let Err(e) = parse(&text) {
            let parent = k.path.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
            for key in expected_keys(&e.message) {
                let path = if parent.is_empty() {
                    key
                } else {
                    format!("{parent}.{key}")
                };
                accepted.push(path);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    accepted
}

/// `a.b[2].c` → `a.b.c`; an inventory's host name → `<host>`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    match out.strip_prefix("hosts.web-") {
        Some(rest) => match rest.split_once('.') {
            Some((_, key)) => format!("hosts.<host>.{key}"),
            None => "hosts.<host>".to_string(),
        },
        None => out,
    }
}

/// The keys documented in one part of docs/configuration.md: the first
/// column of every table, prefixed by the `### \`section\`` heading.
fn documented(part: &str) -> BTreeSet<String> {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let start = docs
        .find(part)
        .unwrap_or_else(|| panic!("no {part} in docs/configuration.md"));
    let rest = &docs[start + part.len()..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    let mut prefix = String::new();
    let mut keys = BTreeSet::new();
    for line in rest[..end].lines() {
        if let Some(h) = line.strip_prefix("### ") {
            prefix = match h.trim().trim_matches('`') {
                "Top level" => String::new(),
                s if !s.contains(' ') => format!("{s}."),
                _ => String::new(),
            };
        } else if let Some(cell) = line.strip_prefix("| `") {
            let key = cell.split('`').next().unwrap_or_default();
            keys.insert(format!("{prefix}{key}").replace("[]", ""));
        }
    }
    keys
}

fn accepted_and_written(doc: &str, accepted: Vec<String>) -> (BTreeSet<String>, BTreeSet<String>) {
    // pm2 entries are pm2's ecosystem entries, documented as one key.
    let written: BTreeSet<String> = key_lines(doc)
        .iter()
        .filter(|k| !k.path.starts_with("pm2["))
        .map(|k| normalize(&k.path))
        .collect();
    let accepted: BTreeSet<String> = accepted.iter().map(|p| normalize(p)).collect();
    (accepted, written)
}

fn assert_complete_and_documented(
    name: &str,
    doc: &str,
    accepted: Vec<String>,
    docs: BTreeSet<String>,
) {
    let (accepted, written) = accepted_and_written(doc, accepted);
    let missing: Vec<_> = accepted.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "{name}: keys the binary accepts but the table does not try: {missing:?}"
    );
    // Documented: every key written (leaves, or parents the docs list).
    let undocumented: Vec<_> = written
        .iter()
        .filter(|k| !docs.contains(*k) && !docs.iter().any(|d| d.starts_with(&format!("{k}."))))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{name}: keys missing from docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<_> = docs.iter().filter(|d| !written.contains(*d)).collect();
    assert!(
        unknown.is_empty(),
        "{name}: docs/configuration.md documents keys the binary does not take: {unknown:?}"
    );
}

#[test]
fn every_host_config_key_is_located_when_wrong_twice_or_misspelt() {
    let accepted = break_every_key("host config", HOST, parse_host);
    assert_complete_and_documented("host config", HOST, accepted, documented("## Host config"));
}

#[test]
fn every_manifest_key_is_located_when_wrong_twice_or_misspelt() {
    let accepted = break_every_key("manifest", MANIFEST, parse_app);
    assert_complete_and_documented(
        "manifest",
        MANIFEST,
        accepted,
        documented("## App manifest"),
    );
}

#[test]
fn every_inventory_key_is_located_when_wrong_twice_or_misspelt() {
    let doc = inventory();
    let accepted = break_every_key("inventory", &doc, parse_inv);
    assert_complete_and_documented("inventory", &doc, accepted, documented("## Inventory"));
}

#[test]
fn a_value_is_located_at_its_own_line_not_where_the_same_text_first_appears() {
    // The same bad value twice: the second, in the key that refuses it, is
    // the one reported.
    let text = "repo:\n  url: https://x/y.git\n  branch: rel-15\n  poll_interval: 15\n";
    let e = parse_host(text).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.message.contains("repo.poll_interval"), "{e}");
    let text = MANIFEST.replace("stable_for: 3s", "stable_for: 40s");
    let text = format!("# stable_for: 40s is too long\n{text}");
    let e = parse_app(&text).unwrap_err();
    let want = text
        .lines()
        .position(|l| l.trim() == "stable_for: 40s")
        .unwrap()
        + 1;
    assert_eq!(e.line, Some(want), "{e}");
    // A duplicate pm2 process name: at the second one.
    let text = MANIFEST.replace("name: worker", "name: web");
    let e = parse_app(&text).unwrap_err();
    let want = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name: web"))
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_eq!(e.line, Some(want), "{e}");
    assert!(e.message.contains("appears twice"), "{e}");
}
