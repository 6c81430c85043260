//! Sealed app secrets on the server (SPEC §7): what the commit asks for an
//! app's secrets against what runs, and the generation a deploy runs with.
//!
//! Opening costs an X25519 operation per file and a comparison with the
//! running generation, so it is done once per (commit, app, running
//! generation): the sealed files' blob ids are remembered, and the same ids
//! mean the same ciphertext, so nothing needs opening again. A re-seal of
//! the same plaintext (`hoist secrets rekey`, a host joining) changes the
//! ids but not the plaintext: it is opened once, compared, and found
//! unchanged. The plaintext itself stays in memory (`Plaintext` wipes itself
//! and never prints) until it is staged as a generation under
//! `<root>/<app>/secrets/`, the only place it is ever written.

use super::{Engine, EngineError, blocking};
use crate::config::{Inventory, Manifest, SharedPath, inventory_path};
use crate::plan::SecretsState;
use crate::secrets::{Generation, Plaintext, SecretStore, ServerIdentity, open_for_server};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::warn;

/// An app's secrets at a commit, on this server.
#[derive(Debug, Clone)]
pub(super) enum Wanted {
    /// The app has no secrets.
    None,
    /// The running generation holds exactly this plaintext.
    Same(String),
    /// Other plaintext: a new generation is staged when the app deploys.
    New(Arc<Vec<(SharedPath, Plaintext)>>),
    /// This server cannot open them: the reason names the file and the fix.
    Refused(String),
}

impl Wanted {
    pub(super) fn state(&self) -> Option<SecretsState> {
        match self {
            Wanted::None | Wanted::Same(_) => None,
            Wanted::New(_) => Some(SecretsState::Changed),
            Wanted::Refused(e) => Some(SecretsState::Refused(e.clone())),
        }
    }
}

/// What was worked out for an app, and from what.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// The sealed files' blob ids at the commit, in `secrets` order.
    ids: Vec<String>,
    /// The generation running then.
    running: Option<String>,
    pub(super) wanted: Wanted,
}

impl Engine {
    fn store(&self, app: &str) -> SecretStore {
        SecretStore::new(
            self.app_dir(app).path(),
            self.settings.pm2_user.as_ref().map(|u| u.owner()),
        )
    }

    /// The secrets of every app of the commit that targets this server.
    pub(super) async fn secrets_at(
        &self,
        commit: &str,
        apps: &[(String, Manifest)],
        inventory: Option<&Inventory>,
    ) -> Result<BTreeMap<String, Wanted>, EngineError> {
        let mut out = BTreeMap::new();
        for (app, m) in apps {
            if m.secrets.is_empty() {
                continue;
            }
            let running = self
                .ledger
                .lock()
                .await
                .app(app)
                .and_then(|s| s.live())
                .and_then(|l| l.secrets.clone());
            let wanted = self.secrets_of(commit, app, m, inventory, running).await?;
            out.insert(app.clone(), wanted);
        }
        Ok(out)
    }

    async fn secrets_of(
        &self,
        commit: &str,
        app: &str,
        m: &Manifest,
        inventory: Option<&Inventory>,
        running: Option<String>,
    ) -> Result<Wanted, EngineError> {
        let env = &self.settings.environment;
        let host = &self.settings.host;
        if let Some(inv) = inventory
            && !inv.hosts.contains_key(host)
        {
            return Ok(Wanted::Refused(format!(
                "{app} has secrets and this server ({host}) is not in {}: add it with its key (hoist keygen prints it), then run hoist secrets rekey",
                inventory_path(env).display()
            )));
        }
        // The sealed files at the commit: ids first, to skip what was seen.
        let mut sealed = Vec::new();
        for s in &m.secrets {
            let path = s.from_for(env);
            let src = self.parts.source.clone();
            let (c, p) = (commit.to_string(), path.clone());
            let found = blocking(move || src.file_at(&c, &p))
                .await?
                .and_then(|f| f.ok_or_else(|| "does not exist in the commit".to_string()));
            match found {
                Ok((id, bytes)) => sealed.push((s.to.clone(), path, id, bytes)),
                Err(why) => {
                    return Ok(Wanted::Refused(format!(
                        "the sealed file {path} of {app} {why}"
                    )));
                }
            }
        }
        let ids: Vec<String> = sealed.iter().map(|(_, _, id, _)| id.clone()).collect();
        // A refusal is worked out again at every poll: a key written or
        // fixed since (identity_file is read each time) ends it.
        if let Some(seen) = self.secrets_seen(app)
            && seen.ids == ids
            && seen.running == running
            && !matches!(seen.wanted, Wanted::Refused(_))
        {
            return Ok(seen.wanted);
        }
        let identity_file = self.settings.identity_file.clone();
        let env2 = env.clone();
        let opened = blocking(move || {
            let identity = ServerIdentity::load(identity_file.as_deref());
            sealed
                .into_iter()
                .map(|(to, path, _, bytes)| {
                    open_for_server(&identity, &path, &bytes, &env2).map(|p| (to, p))
                })
                .collect::<Result<Vec<(SharedPath, Plaintext)>, _>>()
        })
        .await;
        let wanted = match opened {
            Err(e) => Wanted::Refused(e.to_string()),
            Ok(files) => {
                let store = self.store(app);
                let files = Arc::new(files);
                let (f, r) = (files.clone(), running.clone());
                let same = blocking(move || match r.as_deref().map(Generation::parse) {
                    Some(Ok(g)) => store.same_as(&g, &f),
                    _ => Ok(false),
                })
                .await;
                match (same, running.clone()) {
                    (Ok(true), Some(g)) => Wanted::Same(g),
                    (Ok(_), _) => Wanted::New(files),
                    (Err(e), _) => {
                        warn!(
                            app,
                            "cannot read the running secrets back ({e}); they are written again"
                        );
                        Wanted::New(files)
                    }
                }
            }
        };
        self.remember_secrets(
            app,
            Seen {
                ids,
                running,
                wanted: wanted.clone(),
            },
        );
        Ok(wanted)
    }

    fn secrets_seen(&self, app: &str) -> Option<Seen> {
        super::lock(&self.secrets_seen).get(app).cloned()
    }

    fn remember_secrets(&self, app: &str, seen: Seen) {
        super::lock(&self.secrets_seen).insert(app.to_string(), seen);
    }

    /// The generation a deploy of `app` runs with: the running one when
    /// its plaintext is the same, else a new one staged now.
    pub(super) async fn generation_for(
        &self,
        app: &str,
        wanted: &Wanted,
    ) -> Result<Option<String>, String> {
        match wanted {
            Wanted::None => Ok(None),
            Wanted::Same(g) => Ok(Some(g.clone())),
            Wanted::Refused(e) => Err(e.clone()),
            Wanted::New(files) => {
                let store = self.store(app);
                let files = files.clone();
                blocking(move || store.stage(&files))
                    .await
                    .map(|g| Some(g.as_str().to_string()))
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Removes the generations nothing refers to any more: not live, not
    /// the previous pair's, not in a journal entry.
    pub(super) async fn prune_secrets(&self, app: &str) {
        let keep: Vec<Generation> = {
            let ledger = self.ledger.lock().await;
            let Some(st) = ledger.app(app) else { return };
            let mut names: Vec<&str> = Vec::new();
            names.extend(st.live().and_then(|l| l.secrets.as_deref()));
            names.extend(st.previous.as_ref().and_then(|l| l.secrets.as_deref()));
            if let Some(sw) = &st.switch {
                names.extend(sw.from.as_ref().and_then(|l| l.secrets.as_deref()));
                names.extend(sw.to.as_ref().and_then(|l| l.secrets.as_deref()));
            }
            names
                .into_iter()
                .filter_map(|n| Generation::parse(n).ok())
                .collect()
        };
        let store = self.store(app);
        if !store.dir().is_dir() {
            return;
        }
        if let Err(e) = blocking(move || store.prune(&keep)).await {
            warn!(app, "cannot prune old secrets: {e}");
        }
    }
}
