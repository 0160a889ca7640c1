//! Shared by the hostile test plugins, each a binary in `src/bin/` named after the attack it
//! tries. Std only: each is a plain WASI program, as any hostile plugin could be.
//!
//! A plugin tries every variant of its attack and records each outcome, one line per
//! attempt, in `/out/result.txt`:
//! - `refused <attempt>: <error>`: the host said no, as it must;
//! - `ESCAPED <attempt>: <what happened>`: the attack worked.
//!
//! [`Attempts::finish`] exits 0 when every attempt was refused and 1 (printing the escapes
//! to stderr) otherwise, so an escape fails the job visibly even if nobody reads the file.
//!
//! Parameters arrive in `REPX_PARAMS`; [`param`] reads a string parameter without a JSON
//! library. Files an attack aims to create outside its directories are named `PWNED-*`, so
//! a test can look for them anywhere.

use std::fmt::Display;
use std::io::Write;

/// The outcomes of one plugin's attempts.
pub struct Attempts {
    lines: Vec<String>,
    escapes: Vec<String>,
}

impl Default for Attempts {
    fn default() -> Attempts {
        Attempts::new()
    }
}

impl Attempts {
    pub fn new() -> Attempts {
        Attempts {
            lines: Vec::new(),
            escapes: Vec::new(),
        }
    }

    /// An attempt that must fail: `Err` is the refusal, `Ok` an escape.
    pub fn expect_refused<T: std::fmt::Debug, E: Display>(
        &mut self,
        attempt: &str,
        result: Result<T, E>,
    ) {
        match result {
            Err(e) => self.lines.push(format!("refused {attempt}: {e}")),
            Ok(value) => self.escaped(attempt, format!("succeeded with {value:?}")),
        }
    }

    /// Records an escape found some other way.
    pub fn escaped(&mut self, attempt: &str, what: impl Display) {
        let line = format!("ESCAPED {attempt}: {what}");
        self.lines.push(line.clone());
        self.escapes.push(line);
    }

    /// Records a refusal found some other way.
    pub fn refused(&mut self, attempt: &str, why: impl Display) {
        self.lines.push(format!("refused {attempt}: {why}"));
    }

    /// A step the attack needs that is allowed (e.g. making a link inside `/out`).
    pub fn note(&mut self, line: impl Display) {
        self.lines.push(format!("note {line}"));
    }

    /// Writes `/out/result.txt` and exits: 0 when everything was refused, 1 otherwise.
    pub fn finish(self) -> ! {
        let mut text = self.lines.join("\n");
        text.push('\n');
        if let Err(e) = std::fs::write("/out/result.txt", &text) {
            eprintln!("cannot write /out/result.txt: {e}");
            std::process::exit(2);
        }
        if self.escapes.is_empty() {
            std::process::exit(0);
        }
        let mut stderr = std::io::stderr();
        for line in &self.escapes {
            let _ = writeln!(stderr, "{line}");
        }
        std::process::exit(1);
    }
}

/// The string parameter `name` from `REPX_PARAMS` (a flat JSON object), if present.
pub fn param(name: &str) -> Option<String> {
    let params = std::env::var("REPX_PARAMS").ok()?;
    let key = format!("\"{name}\":");
    let start = params.find(&key)? + key.len();
    let rest = params[start..].trim_start().strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The names of the entries of a directory, sorted; empty when it cannot be read.
pub fn names(dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `/in/<name>` for every input the plugin was given.
pub fn inputs() -> Vec<String> {
    names("/in")
        .into_iter()
        .map(|name| format!("/in/{name}"))
        .collect()
}

/// Every regular file under `dir`, depth first (links are not followed).
pub fn files_under(dir: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_string()];
    while let Some(dir) = stack.pop() {
        for name in names(&dir) {
            let path = format!("{dir}/{name}");
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => found.push(path),
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// Creates a symbolic link `link` whose target is `target` (not checked or resolved), the
/// way any WASI program can: through wasi-libc's `symlink`, as std offers no stable call.
pub fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let target = CString::new(target).map_err(std::io::Error::other)?;
    let link = CString::new(link).map_err(std::io::Error::other)?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
