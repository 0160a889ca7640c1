//! `repx init`: a lab that runs as soon as it is made.
//!
//! Templates:
//! - `simple`: generate → sum, plot;
//! - `sweep`: a parameter sweep and a stage gathering every point, with `metrics.json`
//!   for `repx results`;
//! - `impure`: C sources built in place by `builtin:make`, the program run by
//!   `builtin:exec` (needs `make` and `cc`).
//!
//! The simple and sweep templates use RepX's own example plugins; the binary carries
//! them (built by `build.rs` from `plugins/`) and writes them into the lab's `plugins/`,
//! so nothing needs building or downloading before `repx run`.

use std::path::{Path, PathBuf};

use super::error::{CliError, invalid};
use super::{Template, exit};

macro_rules! template_file {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $path))
    };
}

macro_rules! template_plugin {
    ($name:literal) => {
        (
            concat!("plugins/", $name, ".wasm"),
            Content::Bytes(include_bytes!(concat!(
                env!("OUT_DIR"),
                "/",
                $name,
                ".wasm"
            ))),
        )
    };
}

enum Content {
    /// Text in which `{name}` stands for the lab's name.
    Text(&'static str),
    Bytes(&'static [u8]),
}

fn files(template: Template) -> Vec<(&'static str, Content)> {
    use Content::Text;
    match template {
        Template::Simple => vec![
            ("repx.toml", Text(template_file!("simple/repx.toml"))),
            (".gitignore", Text(template_file!("simple/gitignore"))),
            template_plugin!("generate"),
            template_plugin!("sum"),
            template_plugin!("plot"),
        ],
        Template::Sweep => vec![
            ("repx.toml", Text(template_file!("sweep/repx.toml"))),
            (".gitignore", Text(template_file!("sweep/gitignore"))),
            template_plugin!("sweep-point"),
            template_plugin!("sweep-gather"),
        ],
        Template::Impure => vec![
            ("repx.toml", Text(template_file!("impure/repx.toml"))),
            (".gitignore", Text(template_file!("impure/gitignore"))),
            ("src/Makefile", Text(template_file!("impure/src/Makefile"))),
            ("src/main.c", Text(template_file!("impure/src/main.c"))),
            ("src/greet.c", Text(template_file!("impure/src/greet.c"))),
            ("src/greet.h", Text(template_file!("impure/src/greet.h"))),
        ],
    }
}

/// A name for a lab made in `dir`: its directory name, as a TOML-safe word.
fn lab_name(dir: &Path) -> String {
    let name: String = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() { "lab".into() } else { name }
}

pub fn init(dir: Option<&Path>, template: Template) -> Result<i32, CliError> {
    let dir = dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let files = files(template);
    let clashes: Vec<&str> = files
        .iter()
        .map(|(path, _)| *path)
        .filter(|path| std::fs::symlink_metadata(dir.join(path)).is_ok())
        .collect();
    if !clashes.is_empty() {
        return Err(invalid(format!(
            "{} already has {}; init writes only into a directory without them",
            dir.display(),
            clashes.join(", ")
        )));
    }
    let name = lab_name(&dir);
    for (path, content) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match content {
            Content::Text(text) => {
                super::atomic::write(&target, text.replace("{name}", &name).as_bytes())?
            }
            Content::Bytes(bytes) => super::atomic::write(&target, bytes)?,
        }
    }
    let template_name = match template {
        Template::Simple => "simple",
        Template::Sweep => "sweep",
        Template::Impure => "impure",
    };
    outln!("made lab `{name}` ({template_name}) in {}:", dir.display());
    for (path, _) in &files {
        outln!("  {path}");
    }
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    outln!("next: {cd}repx run");
    Ok(exit::SUCCESS)
}
