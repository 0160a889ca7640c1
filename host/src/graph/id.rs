//! Job ids: a BLAKE3 hash of everything that can change a job's output.
//!
//! Fields are written with explicit tags and lengths so that no two different identities
//! can produce the same byte stream. Pure and hermetic jobs share ids (the contract is the
//! same, only the backend differs), so their outputs can be compared.

use std::path::Path;

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
    /// The file as `stat` found it before it was hashed, on this host: a run refuses the
    /// tool once it is another file (see [`crate::wasm::tools::unchanged`]). Not sent
    /// with a job to another host (a Nix build), where the file is another.
    #[serde(skip)]
    pub stat: Option<crate::file_stat::FileStat>,
}

/// Everything a job's id covers.
pub struct Identity<'a> {
    pub stage: &'a str,
    pub plugin_digest: &'a str,
    pub mode: Mode,
    /// The parameters as canonical JSON (keys sorted), see [`super::JobGraph::params_json`].
    pub params: &'a str,
    pub inputs: Vec<(&'a str, InputKey<'a>)>,
    pub outputs: &'a [std::path::PathBuf],
    pub tools: &'a [ToolIdentity],
}

impl Identity<'_> {
    pub fn id(&self) -> String {
        // The fields are written out, then hashed at once: BLAKE3 of the same bytes as
        // hashing each field as it comes, in one call.
        let mut h = Fields(Vec::with_capacity(512));
        h.str("repx-job-v1");
        h.str(self.stage);
        h.str(self.plugin_digest);
        h.str(match self.mode {
            Mode::Pure | Mode::Hermetic => "pure",
            Mode::Impure => "impure",
        });
        h.str(self.params);
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
        blake3::hash(&h.0).to_hex().to_string()
    }
}

/// The bytes an id hashes.
struct Fields(Vec<u8>);

impl Fields {
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.count(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn path(&mut self, p: &Path) {
        self.str(&p.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;

    fn json(params: &BTreeMap<String, Value>) -> String {
        serde_json::to_string(params).unwrap()
    }

    fn identity<'a>(params: &'a str, inputs: Vec<(&'a str, InputKey<'a>)>) -> Identity<'a> {
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

    /// Ids are how a store finds its outputs: the same identity must give the same id as
    /// it always did, or every store loses its cache.
    #[test]
    fn an_id_is_what_it_always_was() {
        let params: BTreeMap<String, Value> = [
            ("i".to_string(), Value::from(7)),
            ("name".to_string(), Value::from("a \"b\" é")),
            ("xs".to_string(), serde_json::json!([1.5, {"k": null}])),
        ]
        .into();
        let tools = [ToolIdentity {
            stat: None,
            name: "sh".into(),
            path: "/bin/sh".into(),
            digest: "d1".into(),
        }];
        let outputs = [std::path::PathBuf::from("result.json")];
        let params = json(&params);
        let full = Identity {
            stage: "train",
            plugin_digest: "p0",
            mode: Mode::Impure,
            params: &params,
            inputs: vec![
                ("data", InputKey::Path("h1")),
                ("model", InputKey::Job("k1")),
                ("all", InputKey::Gather(vec!["k2", "k3"])),
            ],
            outputs: &outputs,
            tools: &tools,
        };
        assert_eq!(
            full.id(),
            "bdde05d930c335672142856129ef375307dc1e4ae580bc2e764ddda51675e451"
        );
        assert_eq!(
            identity("{}", vec![]).id(),
            "8c549b8a38d28d7e2b5ab846e34031c3e276fd8139085562e86778c7bd4716d3"
        );
    }

    #[test]
    fn ids_change_with_every_field() {
        let empty = json(&BTreeMap::new());
        let one = json(&[("a".to_string(), Value::from(1))].into());
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
