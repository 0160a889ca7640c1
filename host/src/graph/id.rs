//! Job ids: a BLAKE3 hash of everything that can change a job's output.
//!
//! Fields are written with explicit tags and lengths so that no two different identities
//! can produce the same byte stream. Pure and hermetic jobs share ids (the contract is the
//! same, only the backend differs), so their outputs can be compared.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::lab::Mode;

/// What an input contributes to a job's id.
#[derive(Debug, Clone)]
pub enum InputKey<'a> {
    /// A snapshot's content hash (pure) or the live directory (impure).
    Path(&'a str),
    /// The upstream job's key: its id, or for an impure upstream its output's hash.
    Job(&'a str),
    Gather(Vec<&'a str>),
}

/// A granted tool, as resolved on the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolIdentity {
    pub name: String,
    pub path: std::path::PathBuf,
    /// BLAKE3 of the executable's bytes.
    pub digest: String,
}

/// Everything a job's id covers.
pub struct Identity<'a> {
    pub stage: &'a str,
    pub plugin_digest: &'a str,
    pub mode: Mode,
    pub params: &'a BTreeMap<String, Value>,
    pub inputs: Vec<(&'a str, InputKey<'a>)>,
    pub outputs: &'a [std::path::PathBuf],
    pub tools: &'a [ToolIdentity],
}

impl Identity<'_> {
    pub fn id(&self) -> String {
        let mut h = Fields(blake3::Hasher::new());
        h.str("repx-job-v1");
        h.str(self.stage);
        h.str(self.plugin_digest);
        h.str(match self.mode {
            Mode::Pure | Mode::Hermetic => "pure",
            Mode::Impure => "impure",
        });
        // serde_json's maps are sorted, so this is canonical.
        h.str(&serde_json::to_string(self.params).unwrap_or_default());
        h.count(self.inputs.len());
        for (name, key) in &self.inputs {
            h.str(name);
            match key {
                InputKey::Path(hash) => {
                    h.str("path");
                    h.str(hash);
                }
                InputKey::Job(key) => {
                    h.str("job");
                    h.str(key);
                }
                InputKey::Gather(keys) => {
                    h.str("gather");
                    h.count(keys.len());
                    keys.iter().for_each(|k| h.str(k));
                }
            }
        }
        h.count(self.outputs.len());
        self.outputs.iter().for_each(|o| h.path(o));
        h.count(self.tools.len());
        for tool in self.tools {
            h.str(&tool.name);
            h.path(&tool.path);
            h.str(&tool.digest);
        }
        h.0.finalize().to_hex().to_string()
    }
}

struct Fields(blake3::Hasher);

impl Fields {
    fn count(&mut self, n: usize) {
        self.0.update(&(n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.update(s.as_bytes());
    }
    fn path(&mut self, p: &Path) {
        self.str(&p.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity<'a>(
        params: &'a BTreeMap<String, Value>,
        inputs: Vec<(&'a str, InputKey<'a>)>,
    ) -> Identity<'a> {
        Identity {
            stage: "s",
            plugin_digest: "d",
            mode: Mode::Pure,
            params,
            inputs,
            outputs: &[],
            tools: &[],
        }
    }

    #[test]
    fn ids_change_with_every_field() {
        let empty = BTreeMap::new();
        let one: BTreeMap<String, Value> = [("a".to_string(), Value::from(1))].into();
        let base = identity(&empty, vec![]).id();
        assert_eq!(base, identity(&empty, vec![]).id());
        assert_ne!(base, identity(&one, vec![]).id());
        assert_ne!(base, identity(&empty, vec![("x", InputKey::Job("k"))]).id());
        assert_ne!(
            identity(&empty, vec![("x", InputKey::Job("k"))]).id(),
            identity(&empty, vec![("x", InputKey::Path("k"))]).id()
        );
        let mut hermetic = identity(&empty, vec![]);
        hermetic.mode = Mode::Hermetic;
        assert_eq!(base, hermetic.id());
        let mut impure = identity(&empty, vec![]);
        impure.mode = Mode::Impure;
        assert_ne!(base, impure.id());
    }
}
