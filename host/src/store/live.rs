//! Logs of jobs while they run: `tmp/live/<id>/{stdout,stderr,host.log}`, written by the
//! runtime as the plugin writes (see `wasm::log`), removed when the plugin's run is over,
//! and read by `repx log -f`.
//!
//! They are a view for a person, never trusted: like all of `tmp/`, a later writer clears
//! what a killed run left. A job's logs of record are those committed with it (`jobs/<id>`)
//! or kept when it failed (`failed/<id>`).

use std::fs;
use std::path::PathBuf;

impl super::Store {
    /// Where job `id` writes its logs while it runs.
    pub fn live_logs(&self, id: &str) -> PathBuf {
        self.root.join("tmp").join("live").join(id)
    }

    /// The ids of jobs whose logs are live now that start with `prefix`.
    pub fn live_ids(&self, prefix: &str) -> Vec<String> {
        let mut ids: Vec<String> = fs::read_dir(self.root.join("tmp").join("live"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| id.starts_with(prefix))
            .collect();
        ids.sort();
        ids
    }

    /// Whether a process holds the store to change it (a `repx run`, a `repx gc`) now.
    pub fn has_writer(&self) -> bool {
        matches!(
            super::lock::lock(&self.root, super::Access::Shared),
            Err(super::StoreError::Locked { .. })
        )
    }
}
