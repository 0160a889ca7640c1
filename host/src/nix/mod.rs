//! The Nix backend: hermetic jobs realised as derivations in the Nix sandbox.
//!
//! Each hermetic job becomes a derivation (see `nix/job.nix`) whose builder is a
//! statically linked repx running `repx exec-job`: it loads the job's plugin from the
//! store and runs it under exactly the pure-mode contract (see [`crate::contract`]).
//! Plugins, `path:` inputs and the outputs of non-hermetic upstream jobs enter the store
//! by content; hermetic upstream jobs are upstream derivations. Nix caches: a derivation
//! whose output is valid is not built again. repx copies each output into its own store
//! and records the Nix path beside it, with a Nix GC root in `<store>/nix/`.
//!
//! Invariant: an output recorded as hermetic was built in the Nix sandbox. A run's own Nix
//! settings are held to an allowlist ([`settings`]), the effective configuration must
//! build in the sandbox, and the builder itself refuses to run outside one ([`sandboxed`]).

pub mod exec;
pub mod settings;
pub mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The derivations of hermetic jobs, from their specs.
const JOB_NIX: &str = include_str!("../../../nix/job.nix");

/// Where a static repx to build with is named, when this repx is not one.
pub const BUILDER_VAR: &str = "REPX_NIX_BUILDER";

#[derive(Debug, thiserror::Error)]
pub enum NixError {
    #[error(
        "hermetic mode needs Nix, and `{0}` is not on PATH: install it (Debian: `apt-get install nix-bin`; \
         `scripts/nix-setup` installs and configures it), or run without --hermetic"
    )]
    Missing(&'static str),
    #[error(
        "Nix builds without its sandbox here (`sandbox = {0}`): hermetic jobs need `sandbox = true` \
         in /etc/nix/nix.conf (and a /bin/sh for the sandbox in `sandbox-paths`; `scripts/nix-setup` \
         sets both)"
    )]
    NoSandbox(String),
    #[error(transparent)]
    Refused(#[from] settings::Refused),
    #[error(
        "{what} {}: {} cannot be read by other local users, but everything in the Nix store \
         can be, so a hermetic job would publish it. If it may be public, make it readable \
         (`chmod o+r` on files, `o+rx` on directories, the ones above included); else keep \
         the stage pure, or pass --publish-private-inputs to publish it anyway",
        path.display(),
        private.display()
    )]
    Private {
        /// What it is to the lab: `the plugin of stage `sum``, `input `src` of stage `build``.
        what: String,
        path: PathBuf,
        /// The part of it (or the directory above it) that others cannot read.
        private: PathBuf,
    },
    #[error(
        "hermetic jobs run a statically linked repx inside the Nix sandbox, and this repx is not one: \
         build one with `cargo build --release --target x86_64-unknown-linux-musl -p repx` and run \
         it, or name it in {BUILDER_VAR}"
    )]
    NoBuilder,
    #[error(
        "{BUILDER_VAR}={}: {reason}; it must be a statically linked repx \
         (`cargo build --release --target x86_64-unknown-linux-musl -p repx`)",
        path.display()
    )]
    BadBuilder { path: PathBuf, reason: String },
    #[error("{0}")]
    Command(String),
}

/// Nix on this host, checked, with the job executor in its store.
pub struct Nix {
    /// Store path of the static repx that builds every hermetic job.
    builder: String,
    /// Settings passed to every build (`--option NAME VALUE`), each allowed.
    settings: settings::Settings,
    /// `job.nix`, written where the evaluator can read it.
    expression: PathBuf,
    /// Store path of each host path added so far.
    added: Mutex<HashMap<PathBuf, String>>,
}

/// A built hermetic job.
pub struct Built {
    pub out: PathBuf,
    pub log: PathBuf,
    /// Whether Nix built anything (false: every derivation was valid already).
    pub realised: bool,
}

/// A failed hermetic build: what to report, and Nix's whole output for the job's log.
pub struct BuildFailure {
    pub message: String,
    pub log: Vec<u8>,
}

impl Nix {
    /// The backend for the plan's hermetic jobs; `None` when it has none.
    pub fn for_plan(
        plan: &crate::plan::Plan,
        store: &crate::store::Store,
        settings: settings::Settings,
    ) -> Result<Option<std::sync::Arc<Nix>>, NixError> {
        // Every stage of the plan, since a fan-out's jobs appear only once its list is
        // written, during the run.
        let hermetic = plan
            .stages
            .keys()
            .any(|name| plan.graph.mode_of(&plan.lab.stages[name]) == crate::lab::Mode::Hermetic);
        if !hermetic {
            return Ok(None);
        }
        if !settings.publish_private {
            publishable(plan, store)?;
        }
        Nix::new(&store.tmp_dir(), settings).map(|nix| Some(std::sync::Arc::new(nix)))
    }

    /// Checks that Nix is installed and builds in its sandbox with `settings` and
    /// `NIX_CONFIG` applied, and adds the job executor to its store; `scratch` is a
    /// directory of repx's own for the files Nix reads.
    pub fn new(scratch: &Path, settings: settings::Settings) -> Result<Nix, NixError> {
        if let Some(config) = std::env::var_os("NIX_CONFIG") {
            settings::check_nix_config(&config.to_string_lossy())?;
        }
        let mut show = Command::new("nix");
        show.args([
            "--extra-experimental-features",
            "nix-command",
            "show-config",
        ]);
        for (name, value) in &settings.options {
            settings::check(name, value, &format!("--nix-option {name}={value}"))?;
            show.args(["--option", name, value]);
        }
        let config = run(&mut show).map_err(|e| match e {
            RunError::NotFound => NixError::Missing("nix"),
            RunError::Failed(message) => NixError::Command(message),
        })?;
        let sandbox = String::from_utf8_lossy(&config)
            .lines()
            .find_map(|l| l.strip_prefix("sandbox = ").map(str::to_string))
            .unwrap_or_default();
        if sandbox != "true" {
            return Err(NixError::NoSandbox(sandbox));
        }
        let builder = store_add(&builder()?).map_err(NixError::Command)?;
        let expression = scratch.join("nix-job.nix");
        std::fs::create_dir_all(scratch)
            .and_then(|()| std::fs::write(&expression, JOB_NIX))
            .map_err(|e| NixError::Command(format!("{}: {e}", expression.display())))?;
        Ok(Nix {
            builder,
            settings,
            expression,
            added: Mutex::new(HashMap::new()),
        })
    }

    /// The settings every build gets, for the SLURM workers of the run.
    pub fn settings(&self) -> &settings::Settings {
        &self.settings
    }

    /// Adds the output of a job that is not hermetic to the store, as [`Nix::add`], once it
    /// is known that other users can read it where it is (or the run publishes anyway).
    pub fn add_output(&self, path: &Path, what: impl FnOnce() -> String) -> Result<String, String> {
        if !self.settings.publish_private
            && let Some(private) = private_part(path, true, None)
        {
            return Err(NixError::Private {
                what: what(),
                path: path.to_path_buf(),
                private,
            }
            .to_string());
        }
        self.add(path)
    }

    /// Adds a file or directory to the store by content (once per run); its store path.
    pub fn add(&self, path: &Path) -> Result<String, String> {
        let mut added = self.added.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(store_path) = added.get(path) {
            return Ok(store_path.clone());
        }
        let store_path = store_add(path)?;
        added.insert(path.to_path_buf(), store_path.clone());
        Ok(store_path)
    }

    /// Builds job `id` of `specs`, written to `dir`; `root` becomes a Nix GC root of its
    /// output (and `root-log` of its log).
    pub fn build(
        &self,
        specs: &[spec::Spec],
        id: &str,
        dir: &Path,
        root: &Path,
    ) -> Result<Built, BuildFailure> {
        let failure = |message: String| BuildFailure {
            message,
            log: Vec::new(),
        };
        let jobs = dir.join("nix-jobs.json");
        let json = serde_json::to_vec_pretty(specs).map_err(|e| failure(e.to_string()))?;
        std::fs::write(&jobs, json).map_err(|e| failure(format!("{}: {e}", jobs.display())))?;
        if let Some(parent) = root.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| failure(format!("{}: {e}", parent.display())))?;
        }
        let mut command = Command::new("nix-build");
        for (name, value) in &self.settings.options {
            command.args(["--option", name, value]);
        }
        let output = command
            .arg(&self.expression)
            .args(["--argstr", "builder", &self.builder])
            .arg("--argstr")
            .arg("jobs")
            .arg(&jobs)
            .args(["-A", &format!("j-{id}.all")])
            .arg("--out-link")
            .arg(root)
            .output()
            .map_err(|e| failure(format!("cannot run nix-build: {e}")))?;
        if !output.status.success() {
            return Err(BuildFailure {
                message: build_failure(&output),
                log: output.stderr,
            });
        }
        let link = |suffix: &str| {
            let mut link = root.as_os_str().to_owned();
            link.push(suffix);
            std::fs::read_link(&link)
                .map_err(|e| failure(format!("{}: {e}", Path::new(&link).display())))
        };
        Ok(Built {
            out: link("")?,
            log: link("-log")?,
            realised: String::from_utf8_lossy(&output.stderr).contains("will be built"),
        })
    }
}

/// Checks that what the plan's hermetic jobs would add to the Nix store, where every local
/// user can read it, other users can read where it is now: each plugin file and `path:`
/// input (the project's directory, not repx's snapshot of it), and the store that holds the
/// outputs of upstream jobs that are not hermetic (sealed readable, so its place decides).
fn publishable(plan: &crate::plan::Plan, store: &crate::store::Store) -> Result<(), NixError> {
    use crate::graph::JobInput;
    use crate::lab::{Mode, PluginRef};
    let mut checked = std::collections::HashSet::new();
    // A `path:` input holding the store is snapshotted without it; so it is checked.
    let skip = store.root().canonicalize().ok();
    let mut check = |path: &Path, what: &dyn Fn() -> String, tree: bool| {
        if !checked.insert(path.to_path_buf()) {
            return Ok(());
        }
        match private_part(path, tree, skip.as_deref()) {
            Some(private) => Err(NixError::Private {
                what: what(),
                path: path.to_path_buf(),
                private,
            }),
            None => Ok(()),
        }
    };
    for job in plan.graph.jobs.iter().filter(|j| j.mode == Mode::Hermetic) {
        if let PluginRef::File(plugin) = &plan.lab.stages[&job.stage].plugin {
            check(
                plugin,
                &|| format!("the plugin of stage `{}`", job.stage),
                true,
            )?;
        }
        for (name, input) in &job.inputs {
            let upstream = match input {
                JobInput::Path(path) => {
                    let what = || format!("input `{name}` of stage `{}`", job.stage);
                    check(path, &what, true)?;
                    continue;
                }
                JobInput::Job(up) => vec![*up],
                JobInput::Gather(ups) => ups.clone(),
            };
            if upstream
                .iter()
                .any(|up| plan.graph.jobs[*up].mode != Mode::Hermetic)
            {
                let what = || {
                    format!(
                        "input `{name}` of stage `{}`, an upstream output in the repx store",
                        job.stage
                    )
                };
                check(store.root(), &what, false)?;
            }
        }
    }
    Ok(())
}

/// The first part of `path` that a user other than its owner, outside its group, could not
/// read: a directory above it that does not let others through, or, when `tree`, `path`
/// or anything below it (but `skip`) that others may not read (a directory also needs
/// `x`). Links are added to the Nix store as links, so they are not followed. A part that
/// cannot be examined counts as private.
fn private_part(path: &Path, tree: bool, skip: Option<&Path>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(real) = path.canonicalize() else {
        return Some(path.to_path_buf());
    };
    for dir in real.ancestors().skip(1) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.permissions().mode() & 0o001 != 0 => {}
            _ => return Some(dir.to_path_buf()),
        }
    }
    let mut stack = vec![real];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return Some(path);
        };
        let mode = meta.permissions().mode();
        let needs = if meta.is_dir() { 0o005 } else { 0o004 };
        if !meta.file_type().is_symlink() && mode & needs != needs {
            return Some(path);
        }
        if tree && meta.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(entries) => stack.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| Some(p.as_path()) != skip),
                ),
                Err(_) => return Some(path),
            }
        }
    }
    None
}

/// Whether this process is the builder of a derivation in Nix's Linux sandbox, which starts
/// it as process 1 of a PID namespace of its own; outside the sandbox (`sandbox = false`,
/// or the fallback where the kernel lacks namespaces) it is a child of Nix in the host's.
/// The builders of hermetic jobs refuse to run elsewhere, so no output of a repx
/// derivation built unsandboxed can become valid in the Nix store.
pub fn sandboxed() -> Result<(), String> {
    if std::process::id() == 1 {
        return Ok(());
    }
    Err(
        "this build is not running in the Nix sandbox (the builder is not process 1 of its own \
         PID namespace): hermetic jobs are built only there; set `sandbox = true` and \
         `sandbox-fallback = false` in /etc/nix/nix.conf and build without `--option sandbox false`"
            .into(),
    )
}

/// Adds a file or directory to the store by content; its store path.
fn store_add(path: &Path) -> Result<String, String> {
    let stdout = run(Command::new("nix-store").arg("--add").arg(path))
        .map_err(|e| format!("adding {} to the Nix store: {e}", path.display()))?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}

/// The static repx that builds hermetic jobs: this one if it is static, else the one
/// named in [`BUILDER_VAR`].
fn builder() -> Result<PathBuf, NixError> {
    if let Some(path) = std::env::var_os(BUILDER_VAR) {
        let path = PathBuf::from(path);
        let bytes = std::fs::read(&path).map_err(|e| NixError::BadBuilder {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if !is_static_elf(&bytes) {
            return Err(NixError::BadBuilder {
                path,
                reason: "it is not a statically linked executable".into(),
            });
        }
        return Ok(path);
    }
    if cfg!(target_feature = "crt-static") {
        return std::env::current_exe().map_err(|e| NixError::Command(e.to_string()));
    }
    Err(NixError::NoBuilder)
}

/// An ELF executable without a program interpreter: it needs no libc from the system.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    // 64-bit little-endian ELF, as built for x86_64-unknown-linux-musl.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count as usize).all(|i| {
        let at = phoff as usize + i * size as usize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP)
    })
}

/// What to say of a failed build: the executor's own explanation when it gave one.
fn build_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(exec::FAILURE_PREFIX))
        .collect();
    if said.is_empty() {
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("nix-build failed:\n{}", tail.join("\n"))
    } else {
        said.join("\n")
    }
}

enum RunError {
    NotFound,
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NotFound => f.write_str("Nix is not installed"),
            RunError::Failed(message) => f.write_str(message),
        }
    }
}

/// Runs a Nix command; its stdout.
fn run(command: &mut Command) -> Result<Vec<u8>, RunError> {
    let output = command.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::NotFound,
        _ => RunError::Failed(format!("{command:?}: {e}")),
    })?;
    if !output.status.success() {
        return Err(RunError::Failed(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_parts_are_found_by_permission_bits() {
        let dir = std::env::temp_dir().join(format!("repx-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (data, store) = (dir.join("data"), dir.join("data/.repx"));
        std::fs::create_dir_all(&store).unwrap();
        chmod(&dir, 0o755);
        std::fs::write(data.join("a.txt"), "a").unwrap();
        chmod(&data.join("a.txt"), 0o644);
        std::fs::write(store.join("lock"), "").unwrap();
        chmod(&store.join("lock"), 0o600);
        // The store inside an input is not part of it; a link is stored as a link.
        std::os::unix::fs::symlink(store.join("lock"), data.join("link")).unwrap();
        assert_eq!(private_part(&data, true, Some(&store)), None);
        assert_eq!(private_part(&data, true, None), Some(store.join("lock")));

        chmod(&data.join("a.txt"), 0o640);
        assert_eq!(
            private_part(&data, true, Some(&store)),
            Some(data.join("a.txt"))
        );
        // Without the tree, only the way to it counts.
        assert_eq!(private_part(&data, false, None), None);
        chmod(&data.join("a.txt"), 0o644);
        chmod(&dir, 0o711);
        assert_eq!(private_part(&data, true, Some(&store)), None);
        chmod(&dir, 0o700);
        assert_eq!(
            private_part(&data.join("a.txt"), false, None),
            Some(dir.clone())
        );
        chmod(&dir, 0o755);
        chmod(&data, 0o751);
        assert_eq!(private_part(&data, true, Some(&store)), Some(data.clone()));
        chmod(&data, 0o755);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
