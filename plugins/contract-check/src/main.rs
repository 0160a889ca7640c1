//! Test plugin, std only (no SDK, no crates): checks the plugin contract from inside, as any
//! plain WASI command would see it, and writes the findings to `/out/report.json` (keys
//! sorted). It builds both as a component (wasm32-wasip2) and as a core module with
//! `_start` (wasm32-wasip1). No probe may panic: each records what it saw.
//!
//! Report keys:
//! - `out_empty_at_start`: `/out` had no entries when the plugin started.
//! - `env_names`: the sorted names of the environment variables.
//! - `inputs`: the sorted entries of `/in` (empty when there is no `/in`).
//! - `input_write_refused`: creating a file, opening an existing file for writing, creating a
//!   directory and removing an existing file were all refused in every `/in/<name>`;
//!   `input_write_leaks` lists those that succeeded as `<name>: <attempt>`, and
//!   `input_write_untested` the inputs without an existing file to try.
//! - `escape_refused`: reading `/in/<name>/../../etc/passwd`, `/out/../../etc/passwd`,
//!   `/etc/passwd`, `../etc/passwd` and `/proc/self/environ` all failed; `escape_leaks`
//!   lists those that succeeded.
//! - `work_present`: `/work` exists.
//! - `tmp_writable`: `/tmp/probe` can be written and read back.
//! - `clock_unix_nanos`: the wall clock, nanoseconds since the Unix epoch.
//! - `random`, `random2`: the hash of 0u64 under two fresh `RandomState`s, whose keys come
//!   from the WASI random source.
//! - `params`, `mode`: `REPX_PARAMS` and `REPX_MODE` as given (null when unset).
//!
//! Parameters: `fail` (bool): when true the plugin exits with status 3 after the report.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

enum Value {
    Bool(bool),
    Str(String),
    List(Vec<String>),
    Null,
}

fn main() {
    // First, before this plugin writes anything there.
    let out_empty = fs::read_dir("/out").is_ok_and(|mut entries| entries.next().is_none());

    let mut report = BTreeMap::new();
    report.insert("out_empty_at_start", Value::Bool(out_empty));

    let mut env_names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    env_names.sort();
    report.insert("env_names", Value::List(env_names));

    let inputs = sorted_names(Path::new("/in"));
    let mut write_leaks = Vec::new();
    let mut untested = Vec::new();
    for name in &inputs {
        let dir = Path::new("/in").join(name);
        if !dir.is_dir() {
            continue;
        }
        let existing = first_file(&dir);
        if existing.is_none() {
            untested.push(name.clone());
        }
        for attempt in write_attempts(&dir, existing.as_deref()) {
            write_leaks.push(format!("{name}: {attempt}"));
        }
    }
    report.insert("input_write_refused", Value::Bool(write_leaks.is_empty()));
    report.insert("input_write_leaks", Value::List(write_leaks));
    report.insert("input_write_untested", Value::List(untested));

    let escapes = inputs
        .iter()
        .map(|name| format!("/in/{name}/../../etc/passwd"))
        .chain(
            [
                "/out/../../etc/passwd",
                "/etc/passwd",
                "../etc/passwd",
                "/proc/self/environ",
            ]
            .map(String::from),
        );
    let escape_leaks: Vec<String> = escapes.filter(|path| fs::read(path).is_ok()).collect();
    report.insert("escape_refused", Value::Bool(escape_leaks.is_empty()));
    report.insert("escape_leaks", Value::List(escape_leaks));
    report.insert("inputs", Value::List(inputs));

    report.insert("work_present", Value::Bool(Path::new("/work").exists()));
    let tmp_writable = fs::write("/tmp/probe", "probe").is_ok()
        && fs::read_to_string("/tmp/probe").is_ok_and(|text| text == "probe");
    report.insert("tmp_writable", Value::Bool(tmp_writable));

    let clock = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_nanos().to_string(),
        Err(e) => format!("before the epoch: {e}"),
    };
    report.insert("clock_unix_nanos", Value::Str(clock));
    report.insert(
        "random",
        Value::Str(RandomState::new().hash_one(0u64).to_string()),
    );
    report.insert(
        "random2",
        Value::Str(RandomState::new().hash_one(0u64).to_string()),
    );

    let params = std::env::var("REPX_PARAMS").ok();
    let fail = params.as_deref().is_some_and(|json| {
        let compact: String = json.chars().filter(|c| !c.is_whitespace()).collect();
        compact.contains("\"fail\":true")
    });
    report.insert("params", params.map_or(Value::Null, Value::Str));
    report.insert(
        "mode",
        std::env::var("REPX_MODE").map_or(Value::Null, Value::Str),
    );

    if let Err(e) = fs::write("/out/report.json", render(&report)) {
        let _ = writeln!(
            std::io::stderr(),
            "contract-check: writing /out/report.json: {e}"
        );
        std::process::exit(1);
    }
    let _ = writeln!(std::io::stdout(), "contract-check: done");
    let _ = writeln!(std::io::stderr(), "contract-check: stderr line");
    if fail {
        let _ = writeln!(std::io::stderr(), "contract-check: failing on request");
        std::process::exit(3);
    }
}

/// The write attempts on a read-only input directory that succeeded. Removal comes last so
/// that opening `existing` for writing has a file to try.
fn write_attempts(dir: &Path, existing: Option<&Path>) -> Vec<&'static str> {
    let mut leaks = Vec::new();
    if fs::File::create(dir.join("new-file")).is_ok() {
        leaks.push("create file");
    }
    if existing.is_some_and(|file| OpenOptions::new().write(true).open(file).is_ok()) {
        leaks.push("open existing file for writing");
    }
    if fs::create_dir(dir.join("new-dir")).is_ok() {
        leaks.push("create directory");
    }
    if existing.is_some_and(|file| fs::remove_file(file).is_ok()) {
        leaks.push("remove existing file");
    }
    leaks
}

/// The first regular file under `dir`, depth first in name order.
fn first_file(dir: &Path) -> Option<PathBuf> {
    sorted_names(dir).into_iter().find_map(|name| {
        let path = dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Some(path),
            Ok(meta) if meta.is_dir() => first_file(&path),
            _ => None,
        }
    })
}

/// The entry names of `dir`, sorted; none when it cannot be read.
fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn render(report: &BTreeMap<&str, Value>) -> String {
    let fields: Vec<String> = report
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Bool(b) => b.to_string(),
                Value::Str(s) => quote(s),
                Value::List(items) => {
                    let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
                    format!("[{}]", items.join(", "))
                }
                Value::Null => "null".to_string(),
            };
            format!("  {}: {value}", quote(key))
        })
        .collect();
    format!("{{\n{}\n}}\n", fields.join(",\n"))
}

/// A JSON string literal.
fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
