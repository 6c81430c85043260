//! `hoist demo`: the whole loop on this machine, in a throwaway folder, with
//! nothing but node and npm installed.
//!
//! It builds a config repository from the embedded `example-repo/` (with
//! libgit2, so no git binary is needed), packs the sample app twice into a
//! file:// store, and drives the real engine: deploy 1.0.0, deploy 2.0.0,
//! revert. pm2 runs with a PM2_HOME of the demo's own and is killed at the
//! end, so the user's pm2 is never touched. `hoist demo --fleet` is the
//! same on several servers, rolling out in waves ([`fleet`]).

pub mod fleet;

use crate::config::HostConfig;
use crate::metrics::Metrics;
use crate::plan::summarize;
use git2::{Repository, Signature};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const APP_FILES: &[(&str, &str)] = &[
    ("server.js", include_str!("../example-repo/app/server.js")),
    (
        "package.json",
        include_str!("../example-repo/app/package.json"),
    ),
    (
        "scripts/migrate.js",
        include_str!("../example-repo/app/scripts/migrate.js"),
    ),
];
const WEB_MANIFEST: &str = include_str!("../example-repo/apps/web.yaml");
const API_MANIFEST: &str = include_str!("../example-repo/apps/api.yaml");

/// Finds a pm2 to use: `HOIST_PM2`, `pm2` on PATH, the project's local
/// install, or one installed with npm into the user's cache.
pub fn find_pm2() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("HOIST_PM2") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = which("pm2") {
        return Ok(p);
    }
    let local = PathBuf::from(".tools/pm2/node_modules/.bin/pm2");
    if local.exists() {
        return std::fs::canonicalize(&local).map_err(|e| e.to_string());
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let prefix = PathBuf::from(home).join(".cache/hoist/pm2");
    let bin = prefix.join("node_modules/.bin/pm2");
    if bin.exists() {
        return Ok(bin);
    }
    if which("npm").is_none() {
        return Err("the demo needs node and npm (to install pm2); install them first".into());
    }
    println!("· installing pm2 into {} (once)", prefix.display());
    let st = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&prefix)
        .arg("pm2@7")
        .status()
        .map_err(|e| format!("cannot run npm: {e}"))?;
    if !st.success() || !bin.exists() {
        return Err("npm could not install pm2".into());
    }
    Ok(bin)
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A tree holding each (path, bytes), folders made as needed.
fn tree_of(repo: &Repository, files: &[(String, Vec<u8>)]) -> Result<git2::Oid, String> {
    let e = |e: git2::Error| e.message().to_string();
    let mut here = repo.treebuilder(None).map_err(e)?;
    let mut folders: std::collections::BTreeMap<&str, Vec<(String, Vec<u8>)>> =
        std::collections::BTreeMap::new();
    for (path, bytes) in files {
        match path.split_once('/') {
            Some((dir, rest)) => folders
                .entry(dir)
                .or_default()
                .push((rest.to_string(), bytes.clone())),
            None => {
                let blob = repo.blob(bytes).map_err(e)?;
                here.insert(path, blob, 0o100644).map_err(e)?;
            }
        }
    }
    for (dir, inner) in folders {
        let id = tree_of(repo, &inner)?;
        here.insert(dir, id, 0o040000).map_err(e)?;
    }
    here.write().map_err(e)
}

/// Commits `tree` on `main`, after its tip.
fn commit_tree(repo: &Repository, message: &str, tree: &git2::Tree<'_>) -> Result<String, String> {
    let e = |e: git2::Error| e.message().to_string();
    let sig = Signature::now("hoist demo", "demo@hoist.invalid").map_err(e)?;
    let parent = repo
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo
        .commit(Some("refs/heads/main"), &sig, &sig, message, tree, &parents)
        .map_err(e)?;
    Ok(id.to_string())
}

/// `git revert HEAD` for a history of whole-tree commits: a new commit
/// with the tree of HEAD's parent.
fn revert_head(repo: &Repository) -> Result<String, String> {
    let e = |e: git2::Error| e.message().to_string();
    let head = repo
        .find_reference("refs/heads/main")
        .and_then(|r| r.peel_to_commit())
        .map_err(e)?;
    let parent = head.parent(0).map_err(e)?;
    let msg = format!("Revert \"{}\"", head.summary().ok().flatten().unwrap_or(""));
    commit_tree(repo, &msg, &parent.tree().map_err(e)?)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

struct World {
    dir: PathBuf,
    repo: Repository,
    pm2: PathBuf,
    web_port: u16,
    api_port: u16,
    /// The inventory and the sealed .env files, committed with every step.
    sealed: Vec<(String, Vec<u8>)>,
}

impl World {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// Packs the sample app as `release` into the store; returns (url, sha256).
    fn pack(&self, release: &str) -> Result<(String, String), String> {
        let build = self.path(&format!("build-{release}"));
        for (name, text) in APP_FILES {
            let p = build.join(name);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&p, text).map_err(|e| e.to_string())?;
        }
        std::fs::write(build.join("RELEASE"), format!("{release}\n")).map_err(|e| e.to_string())?;
        let out = self.path(&format!("store/app-{release}.tar.zst"));
        let sha = crate::producer::pack(&build, &out).map_err(|e| e.to_string())?;
        Ok((format!("file://{}", out.display()), sha))
    }

    fn manifest(
        &self,
        template: &str,
        release: &str,
        url: &str,
        sha: &str,
    ) -> Result<String, String> {
        // Ports first: the sha256 written next could contain "3000".
        let template = template
            .replace("3000", &self.web_port.to_string())
            .replace("3001", &self.api_port.to_string());
        crate::producer::manifest_edit::set_release(&template, release, url, sha)
            .map_err(|e| e.to_string())
    }

    /// Commits the given manifests as the whole `apps/` folder on `main`,
    /// beside the inventory and the sealed secrets.
    fn commit(&self, message: &str, files: &[(&str, String)]) -> Result<String, String> {
        let mut all: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(name, text)| (format!("apps/{name}"), text.as_bytes().to_vec()))
            .collect();
        all.extend(self.sealed.iter().cloned());
        let id = tree_of(&self.repo, &all)?;
        let tree = self
            .repo
            .find_tree(id)
            .map_err(|e| e.message().to_string())?;
        commit_tree(&self.repo, message, &tree)
    }

    async fn app_says(&self, port: u16) -> String {
        self.get(port, "/").await
    }

    async fn get(&self, port: u16, path: &str) -> String {
        let url = format!("http://127.0.0.1:{port}{path}");
        match reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default().trim().to_string(),
            Err(_) => "(no answer)".into(),
        }
    }

    fn statuses(&self, commit: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("statuses.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["sha"] == commit)
            .map(|v| {
                format!(
                    "{} [{}] {}",
                    v["state"].as_str().unwrap_or(""),
                    v["context"].as_str().unwrap_or(""),
                    v["description"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

pub async fn run() -> Result<(), String> {
    in_a_folder(
        "hoist demo",
        "hoist-demo-",
        "· cleaning up: stopping the demo's pm2",
        &["pm2home"],
        |root, pm2| async move { demo(&root, pm2).await },
    )
    .await
}

/// Runs a demo in a fresh folder (`title in <folder>` first), then kills
/// the pm2 of each home under it and removes the folder, unless
/// `HOIST_DEMO_KEEP` is set: whatever the demo did, nothing is left running.
async fn in_a_folder<F, Fut>(
    title: &str,
    prefix: &str,
    cleaning: &str,
    pm2_homes: &[&str],
    demo: F,
) -> Result<(), String>
where
    F: FnOnce(PathBuf, PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let pm2 = find_pm2()?;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("cannot make a folder for the demo: {e}"))?;
    let keep = std::env::var_os("HOIST_DEMO_KEEP").is_some();
    let root = dir.path().to_path_buf();
    println!("{title} in {}", root.display());
    let result = demo(root.clone(), pm2.clone()).await;
    println!("{cleaning}");
    for home in pm2_homes {
        let _ = tokio::process::Command::new(&pm2)
            .arg("kill")
            .env("PM2_HOME", root.join(home))
            .output()
            .await;
    }
    if keep {
        let kept = dir.keep();
        println!("· kept {} (HOIST_DEMO_KEEP)", kept.display());
    }
    result
}

async fn demo(root: &Path, pm2: PathBuf) -> Result<(), String> {
    for d in ["store", "srv", "state", "pm2home"] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| e.to_string())?;
    }
    let repo =
        Repository::init_bare(root.join("config.git")).map_err(|e| e.message().to_string())?;
    let mut w = World {
        dir: root.to_path_buf(),
        repo,
        pm2,
        web_port: free_port()?,
        api_port: free_port()?,
        sealed: Vec::new(),
    };
    // The server's own key, listed in the inventory, and each app's .env
    // sealed to it: what `hoist keygen` and `hoist secrets seal` do.
    println!("· sealing each app's .env to this server's key (fleet/demo.yaml)");
    let identity = w.path("identity");
    let public = crate::secrets::keygen(&identity).map_err(|e| e.to_string())?;
    let inventory = format!("hosts:\n  web-demo: {{ labels: [web], key: \"{public}\" }}\n");
    let recipients = crate::secrets::RecipientSet::from_inventory(
        &crate::config::parse_inventory(Path::new("fleet/demo.yaml"), &inventory)
            .map_err(|e| e.to_string())?
            .1,
        None,
    )
    .map_err(|e| e.to_string())?;
    w.sealed
        .push(("fleet/demo.yaml".into(), inventory.into_bytes()));
    for app in ["web", "api"] {
        let plaintext = format!("GREETING=hello from the sealed .env of {app}\n");
        let sealed =
            crate::secrets::seal(&recipients, plaintext.as_bytes()).map_err(|e| e.to_string())?;
        w.sealed
            .push((format!("secrets/demo/{app}.env.age"), sealed.into_bytes()));
    }
    let cfg_text = format!(
        "host: web-demo\nlabels: [web]\nenvironment: demo\nroot: {root}/srv\nstate_dir: {root}/state\nkeep_releases: 3\nrepo:\n  url: file://{root}/config.git\n  branch: main\n  poll_interval: 1s\n  jitter: 0s\nstatus:\n  provider: file\n  path: {root}/statuses.jsonl\npm2:\n  command: {pm2}\n  home: {root}/pm2home\nlisten: \"\"\nidentity_file: {identity}\n",
        root = root.display(),
        pm2 = w.pm2.display(),
        identity = identity.display(),
    );
    let cfg_path = w.path("hoist.yaml");
    std::fs::write(&cfg_path, &cfg_text).map_err(|e| e.to_string())?;
    let cfg = HostConfig::load(&cfg_path).map_err(|e| e.to_string())?;
    let engine = crate::setup::engine(&cfg, Arc::new(Metrics::new()))
        .await
        .map_err(|e| e.to_string())?;

    println!("· packing the sample app as releases 1.0.0 and 2.0.0 into a file:// store");
    let (url1, sha1) = w.pack("1.0.0")?;
    let (url2, sha2) = w.pack("2.0.0")?;

    let steps: [(&str, &str); 3] = [
        ("deploy 1.0.0", "web and api 1.0.0"),
        ("deploy 2.0.0", "web and api 2.0.0"),
        (
            "revert the last commit",
            "back to 1.0.0, from the releases kept on disk",
        ),
    ];
    for (i, (title, what)) in steps.iter().enumerate() {
        println!("\n== step {}: {title} ({what})", i + 1);
        let commit = match i {
            0 => w.commit(
                "Deploy 1.0.0",
                &[
                    ("web.yaml", w.manifest(WEB_MANIFEST, "1.0.0", &url1, &sha1)?),
                    ("api.yaml", w.manifest(API_MANIFEST, "1.0.0", &url1, &sha1)?),
                ],
            )?,
            1 => w.commit(
                "Deploy 2.0.0",
                &[
                    ("web.yaml", w.manifest(WEB_MANIFEST, "2.0.0", &url2, &sha2)?),
                    ("api.yaml", w.manifest(API_MANIFEST, "2.0.0", &url2, &sha2)?),
                ],
            )?,
            _ => revert_head(&w.repo)?,
        };
        println!("· commit {} on main", &commit[..12]);
        let report = engine.pass().await.map_err(|e| e.to_string())?;
        engine.reporter().flush(Duration::from_secs(10)).await;
        for (app, o) in &report.outcomes {
            println!("  {}", summarize(&[(app.clone(), o.clone())]).1);
        }
        for s in w.statuses(&commit) {
            println!("  status: {s}");
        }
        println!("  web answers: {}", w.app_says(w.web_port).await);
        println!("  api answers: {}", w.app_says(w.api_port).await);
        if i == 0 {
            println!(
                "  web's /env (its sealed .env, opened on this server): {}",
                w.get(w.web_port, "/env").await
            );
        }
        if !report.converged {
            return Err(format!("step {} did not converge", i + 1));
        }
    }
    let link = std::fs::read_link(w.path("srv/web/current")).map_err(|e| e.to_string())?;
    println!("\n· srv/web/current -> {}", link.display());
    println!("· history:");
    for e in crate::state::read_history(&w.path("state")).map_err(|e| e.to_string())? {
        println!(
            "  {} {} {} {}{}",
            e.event,
            e.app.unwrap_or_default(),
            e.release.unwrap_or_default(),
            e.from.map(|f| format!("(from {f}) ")).unwrap_or_default(),
            e.seconds.map(|s| format!("in {s:.1}s")).unwrap_or_default()
        );
    }
    println!("\ndemo finished: deploy, update and revert all went live and were reported.");
    Ok(())
}
