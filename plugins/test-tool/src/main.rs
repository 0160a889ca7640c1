//! Test plugin: makes one `run-tool` request as described by its parameters, so tests can
//! check what the host grants and refuses.
//!
//! Parameters:
//! - `tool` (string): the tool name or guest path.
//! - `args` (list of strings, default `[]`).
//! - `cwd` (string, default `"/tmp"`).
//! - `env` (map of string to string, default `{}`).
//! - `stdout_file` (string, optional).
//!
//! When the host runs the command, its exit status is written to `/out/status.txt` and the
//! plugin exits 0 whatever the status; when the host refuses, the plugin prints
//! `tool refused: <reason>` to stderr and exits 1.

use std::collections::BTreeMap;

use repx_guest::Tool;
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    tool: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default = "default_cwd")]
    cwd: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stdout_file: Option<String>,
}

fn default_cwd() -> String {
    "/tmp".into()
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        let mut tool = Tool::new(p.tool).args(p.args).cwd(p.cwd);
        for (key, value) in p.env {
            tool = tool.env(key, value);
        }
        if let Some(file) = p.stdout_file {
            tool = tool.stdout_file(file);
        }
        match tool.status() {
            Ok(code) => {
                std::fs::write(ctx.out().join("status.txt"), format!("{code}\n"))?;
                Ok(())
            }
            Err(e) => {
                eprintln!("tool refused: {e}");
                std::process::exit(1)
            }
        }
    })
}
