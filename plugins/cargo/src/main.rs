//! `builtin:cargo`: runs `cargo build` on a Rust crate of the project, in place, and copies
//! the binaries it built into `/out`.
//!
//! Parameters:
//! - `input` (string, default `"src"`): the input holding the crate (its `Cargo.toml`).
//! - `dir` (string, default the value of `input`): the directory relative to `/work` to
//!   build in.
//! - `profile` (string, default `"release"`): the cargo profile (`dev` builds into
//!   `target/debug`).
//! - `bin` (string, optional): the binary to build (`--bin`) and copy to `/out/bin/<bin>`.
//! - `artifacts` (map of output path -> path relative to the profile's target directory,
//!   optional): what to copy into `/out`, instead of `bin`'s default.
//! - `args` (list of strings, default `[]`): more arguments for `cargo build`
//!   (`["--offline"]`, `["--features", "x"]`).
//!
//! It runs in impure mode only: cargo builds in place in `/work/<dir>`, so `target/` is
//! reused between runs and an edit rebuilds only the crates it touched. A pure sandbox sees
//! neither a rustup toolchain (under the user's home) nor cargo's registry cache, and a
//! copy of the crate would build everything from scratch every run.
//!
//! cargo links through the system's C compiler, so the stage grants `cc` with `cargo`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use repx_guest::{Mode, Tool};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_input")]
    input: String,
    dir: Option<String>,
    #[serde(default = "default_profile")]
    profile: String,
    bin: Option<String>,
    artifacts: Option<BTreeMap<String, String>>,
    #[serde(default)]
    args: Vec<String>,
}

fn default_input() -> String {
    "src".into()
}

fn default_profile() -> String {
    "release".into()
}

fn main() {
    repx_guest::run(|ctx| {
        let p: Params = ctx.params()?;
        if ctx.mode() != Mode::Impure {
            return Err(format!(
                "builtin:cargo builds in place, in impure mode only: set `mode = \"impure\"` \
                 on stage `{}`, and run it without --pure or --hermetic",
                ctx.stage()
            )
            .into());
        }
        let crate_dir = Path::new("/work").join(p.dir.as_deref().unwrap_or(&p.input));
        let mut args = vec![
            "build".to_string(),
            "--profile".to_string(),
            p.profile.clone(),
        ];
        if let Some(bin) = &p.bin {
            args.extend(["--bin".to_string(), bin.clone()]);
        }
        args.extend(p.args);
        Tool::new("cargo")
            .args(args)
            .cwd(crate_dir.to_string_lossy())
            .run()?;

        // cargo's own names for its two built-in profiles' directories.
        let profile_dir = match p.profile.as_str() {
            "dev" | "test" => "debug",
            "release" | "bench" => "release",
            other => other,
        };
        let built_dir = crate_dir.join("target").join(profile_dir);
        let artifacts = match (p.artifacts, &p.bin) {
            (Some(artifacts), _) => artifacts,
            (None, Some(bin)) => BTreeMap::from([(format!("bin/{bin}"), bin.clone())]),
            (None, None) => BTreeMap::new(),
        };
        for (output, built) in &artifacts {
            let from = built_dir.join(built);
            if !from.is_file() {
                return Err(format!(
                    "artifact `{output}`: `{built}` was not built (looked for {})",
                    from.display()
                )
                .into());
            }
            let to = ctx.out().join(output);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&from, &to).map_err(|e| {
                format!(
                    "artifact `{output}`: copying {} to {}: {e}",
                    from.display(),
                    to.display()
                )
            })?;
        }
        Ok(())
    })
}
