//! Running plugins: one wasmtime `Engine` per process, compiled plugins cached on disk and
//! pre-linked once per digest, a fresh `Store` and WASI context per job.
//!
//! A plugin is either a `wasi:cli/run` component (wasm32-wasip2), which may also import
//! `repx:stage/host`, or a core module with `_start` (wasm32-wasip1). Whatever it is, its
//! capabilities come from the job's [`policy::Policy`] only.

pub mod builtin;
mod cache;
mod deadline;
pub mod host;
mod log;
mod open;
mod output;
pub mod policy;
mod refusal;
pub mod schema;
mod streams;
pub mod tools;
mod trace;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{self, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::graph::id::ToolIdentity;
use crate::lab::limits::{self, Limits};
use host::{HostState, Observer};
use log::LogPipe;
use output::OutputLimit;
use policy::Policy;

/// How much of each pooled linear memory stays mapped between jobs; see [`Runtime::new`].
const KEEP_RESIDENT: usize = 4 << 20;

/// How often running plugins check their wall-time limit and for cancellation.
const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("plugin {plugin}: {message}")]
    Plugin { plugin: String, message: String },
    /// The plugin does not compile or link: nothing of it can run.
    #[error("plugin {plugin} is not a valid WASI plugin: {reason}")]
    Refused { plugin: String, reason: String },
}

/// A plugin's bytes and identity.
#[derive(Clone)]
pub struct Plugin {
    /// Where it came from, for messages.
    pub name: String,
    /// BLAKE3 of the bytes, hex.
    pub digest: String,
    /// The file as read: an interpreter compiled to wasm runs to tens of MiB, which a
    /// conversion to `Arc<[u8]>` would copy (and fault in) once more.
    pub bytes: Arc<Vec<u8>>,
}

/// The SHA-256 of a plugin's bytes, hex: what a lab's `sha256` pins.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plugin {
    pub fn new(name: String, bytes: Vec<u8>) -> Plugin {
        Plugin {
            name,
            digest: digest(&bytes).to_hex().to_string(),
            bytes: Arc::new(bytes),
        }
    }

    pub fn is_component(&self) -> bool {
        // Core modules are version 1; components carry layer 1 in the same four bytes.
        self.bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
    }
}

/// Above this size a digest is hashed on every core: below it, handing the work to other
/// threads costs more than it saves (blake3's advice is 128 KiB).
const PARALLEL_DIGEST: usize = 1 << 20;

/// BLAKE3 of `bytes`, on every core when they are large (a cached load of an 18 MB
/// component is mostly hashing).
pub(crate) fn digest(bytes: &[u8]) -> blake3::Hash {
    if bytes.len() < PARALLEL_DIGEST {
        return blake3::hash(bytes);
    }
    blake3::Hasher::new().update_rayon(bytes).finalize()
}

/// A plugin compiled and linked, ready to instantiate.
enum Prepared {
    Component(CommandPre<ComponentState>),
    Module(wasmtime::InstancePre<ModuleState>),
}

struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    host: HostState,
    memory: MemoryBudget,
    output: OutputLimit,
    /// When the job's wall time is up or the run is interrupted; host calls that wait
    /// end there.
    deadline: deadline::Deadline,
    /// What the plugin asks of the host, in a traced runtime (`repx debug`) only.
    trace: Option<trace::Trace>,
}

impl trace::TraceView for ComponentState {
    fn traced(
        &mut self,
    ) -> (
        wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
        &mut trace::Trace,
    ) {
        (
            wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            self.trace
                .as_mut()
                .expect("a traced runtime gives every job a trace"),
        )
    }
}

impl streams::StreamsView for ComponentState {
    fn streams(&mut self) -> streams::Streams<'_> {
        streams::Streams {
            files: wasmtime_wasi::filesystem::WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            output: &mut self.output,
        }
    }
}

impl open::OpenView for ComponentState {
    fn files(&mut self) -> wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_> {
        wasmtime_wasi::filesystem::WasiFilesystemCtxView {
            ctx: self.wasi.filesystem(),
            table: &mut self.table,
        }
    }
}

impl deadline::WithDeadline for ComponentState {
    fn deadline(&self) -> deadline::Deadline {
        self.deadline.clone()
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct ModuleState {
    wasi: WasiP1Ctx,
    memory: MemoryBudget,
    output: OutputLimit,
    deadline: deadline::Deadline,
}

impl deadline::ModuleWaits for ModuleState {
    fn wasi(&mut self) -> &mut WasiP1Ctx {
        &mut self.wasi
    }

    fn deadline(&self) -> deadline::Deadline {
        self.deadline.clone()
    }
}

/// The most core module instances, linear memories and tables one job's plugin may have.
/// A Rust component has 3, 1 and 2; a core module has one of each at most (the pool's
/// per-module bound). The pool is sized from these, so that no job can take what another
/// job of the run needs (see [`Runtime::new`]).
const MAX_INSTANCES: u32 = 32;
const MAX_MEMORIES: u32 = 4;
const MAX_TABLES: u32 = 8;

/// What one table element costs against the memory limit: the pointer wasmtime keeps
/// for it.
const TABLE_ELEMENT: u64 = std::mem::size_of::<usize>() as u64;

/// One job's memory budget: every linear memory and every table of its plugin counts,
/// together, against the stage's `memory` limit. Each growth adds its size, once: O(1).
struct MemoryBudget {
    limit: u64,
    /// Bytes of all the job's memories and tables, as granted.
    used: u64,
    /// The last growth granted, taken back if it fails after all.
    granted: u64,
    /// The most `used` was: the plugin's peak memory.
    peak: u64,
}

impl MemoryBudget {
    fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: 0,
            granted: 0,
            peak: 0,
        }
    }

    /// Grants a growth from `current` to `desired` bytes, or traps naming the limit.
    fn grow(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used.saturating_add(growth);
        if total > self.limit {
            return Err(wasmtime::format_err!(
                "memory limit of {} exceeded (the plugin asked for {} in all, its linear \
                 memories and tables together)",
                limits::bytes(self.limit),
                limits::bytes(total)
            ));
        }
        self.used = total;
        self.peak = self.peak.max(total);
        self.granted = growth;
        Ok(true)
    }

    fn failed(&mut self) {
        self.used -= std::mem::take(&mut self.granted);
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| (elements as u64).saturating_mul(TABLE_ELEMENT);
        self.grow(bytes(current), bytes(desired))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }
}

/// Everything one job run needs besides the plugin.
pub struct JobRun {
    pub stage: String,
    pub policy: Arc<Policy>,
    pub grants: Arc<[ToolIdentity]>,
    pub observer: Arc<dyn Observer>,
    pub limits: Limits,
    /// A directory to write the job's logs into as they come (`stdout`, `stderr`,
    /// `host.log`), for `repx log -f`; removed when the plugin's run is over.
    pub live: Option<PathBuf>,
}

/// How a plugin run ended.
#[derive(Debug)]
pub enum Ending {
    Exit(i32),
    Trap(String),
}

/// What a plugin run left besides its files.
pub struct Finished {
    pub ending: Ending,
    /// A tool call of the plugin was refused.
    pub tool_refused: bool,
    /// The run was interrupted while the plugin ran.
    pub interrupted: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub host_log: Vec<u8>,
    pub usage: Usage,
}

/// What a plugin run used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the thread that ran the plugin (its host calls included, its tools not).
    pub cpu: Duration,
    /// The most its linear memories and tables held at once, in bytes (see
    /// [`MemoryBudget`]; memories never shrink, so the last grant is the peak).
    pub peak_memory: u64,
    pub tools: tools::ToolUsage,
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    // SAFETY: `now` is a plain C struct that `clock_gettime` fills.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is valid for writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// How many lines of stderr a failure message carries, and how many characters of each: the
/// message goes to the terminal, whatever the plugin printed; its log has the rest.
const STDERR_TAIL_LINES: usize = 10;
const STDERR_TAIL_CHARS: usize = 300;

/// What kind of failure a run that did not succeed had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The plugin exited with this status.
    Exit(i32),
    Trap,
    /// A limit of the stage (`memory`, `time`, `output`, `files`) ended it.
    Limit(&'static str),
    /// The run was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
    /// It failed after a tool call was refused.
    ToolRefused,
}

impl Finished {
    /// The kind of the run's failure; `None` when it succeeded.
    pub fn cause(&self) -> Option<Cause> {
        let trap = match &self.ending {
            Ending::Exit(0) => return None,
            _ if self.interrupted => return Some(Cause::Interrupted),
            Ending::Exit(_) if self.tool_refused => return Some(Cause::ToolRefused),
            Ending::Exit(code) => return Some(Cause::Exit(*code)),
            Ending::Trap(trap) => trap,
        };
        // The messages this module and its limits write (see `ending_of`, `deadline`,
        // `output`, `MemoryBudget`).
        let limits = [
            ("memory limit", "memory"),
            ("wall-time limit", "time"),
            ("output limit", "output"),
            ("open-files limit", "files"),
        ];
        Some(
            if let Some((_, which)) = limits.iter().find(|(p, _)| trap.starts_with(p)) {
                Cause::Limit(which)
            } else if self.tool_refused {
                Cause::ToolRefused
            } else {
                Cause::Trap
            },
        )
    }

    /// Why the run failed, with the tail of its stderr and, when a tool it ran failed, the
    /// tail of that tool's output (a compiler's errors, which the plugin's own message only
    /// sums up); `None` when it succeeded.
    pub fn failure(&self) -> Option<String> {
        let failure = match &self.ending {
            Ending::Exit(0) => return None,
            Ending::Exit(code) => format!("exit status {code}"),
            Ending::Trap(trap) => format!("trap: {}", trap.lines().next().unwrap_or_default()),
        };
        let stderr = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let host_log = String::from_utf8_lossy(&self.host_log);
        let tail: Vec<String> = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..]
            .iter()
            .chain(&failed_tool_output(&host_log))
            .map(|line| match line.char_indices().nth(STDERR_TAIL_CHARS) {
                Some((cut, _)) => format!("{}… (cut)", &line[..cut]),
                None => line.to_string(),
            })
            .collect();
        let tail = tail.join("\n");
        Some(if tail.is_empty() {
            failure
        } else {
            format!("{failure}\n{tail}")
        })
    }
}

/// The output of the last tool run in `host_log` (see [`host`]: a `$ command` line, the
/// tool's output, then `[exit status N]`), its command line first, if that run failed.
fn failed_tool_output(host_log: &str) -> Vec<&str> {
    // The marker follows the tool's output, on a line of its own unless the output had no
    // final newline.
    let Some(marker) = host_log.rfind("[exit status ") else {
        return Vec::new();
    };
    if host_log[marker..].starts_with("[exit status 0]") {
        return Vec::new();
    }
    let lines: Vec<&str> = host_log[..marker].lines().collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("$ ")) else {
        return Vec::new();
    };
    // The last lines of a long output, and the command, so that the reader knows whose.
    let mut shown = vec![lines[start]];
    let output = &lines[start + 1..];
    shown.extend(&output[output.len().saturating_sub(STDERR_TAIL_LINES - 1)..]);
    shown
}

pub struct Runtime {
    engine: Engine,
    components: component::Linker<ComponentState>,
    modules: wasmtime::Linker<ModuleState>,
    cache: Option<cache::Cache>,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    bubblewrap: Option<Arc<Path>>,
    interrupt: deadline::Interrupt,
    watchdog: deadline::Watchdog,
    /// Tells the epoch ticker thread to stop.
    stop_ticker: Arc<AtomicBool>,
    /// Where a traced runtime's calls go (see [`trace`]).
    tracer: Option<Arc<dyn Tracer>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// `cache` is where compiled plugins are kept; it must be a directory no plugin is given.
    pub fn new(cache: Option<PathBuf>, concurrency: usize) -> Result<Runtime, RuntimeError> {
        Runtime::build(cache, concurrency, None)
    }

    /// A runtime for one job at a time that tells `tracer` every file access and tool run of
    /// a component plugin (see [`trace`]).
    pub fn traced(
        cache: Option<PathBuf>,
        tracer: Arc<dyn Tracer>,
    ) -> Result<Runtime, RuntimeError> {
        Runtime::build(cache, 1, Some(tracer))
    }

    fn build(
        cache: Option<PathBuf>,
        concurrency: usize,
        tracer: Option<Arc<dyn Tracer>>,
    ) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        // A job holds one component instance (none for a core module) and at most the
        // per-job bounds of core instances, memories and tables, which its store's
        // limiter enforces as it instantiates: however many a plugin asks for, the jobs
        // running at once (at most `slots`) all fit, and one that asks for more fails
        // alone, naming the bound.
        let slots = (concurrency as u32).max(4) * 4;
        pool.total_component_instances(slots)
            .total_core_instances(slots * MAX_INSTANCES)
            .total_memories(slots * MAX_MEMORIES)
            .total_tables(slots * MAX_TABLES)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            // Stacks are for async fibers, which no plugin runs on (calls are synchronous);
            // the default of 1000 costs every run a 2 GiB reservation and a guard-page
            // mprotect per stack (a third of a no-op run's time).
            .total_stacks(slots)
            .max_memory_size(limits::MAX_MEMORY as usize)
            // A finished job's memory is reset by zeroing the pages it wrote (found with
            // PAGEMAP_SCAN where the kernel has it), not unmapped: no madvise, no TLB
            // shootdown and no page faults for the next job in the slot.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Epochs interrupt running plugins when the run is cancelled.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut components = component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut components).map_err(engine_err)?;
        streams::shadow(&mut components).map_err(engine_err)?;
        open::shadow(&mut components).map_err(engine_err)?;
        if tracer.is_some() {
            trace::shadow(&mut components).map_err(engine_err)?;
        }
        host::repx::stage::host::add_to_linker::<_, component::HasSelf<HostState>>(
            &mut components,
            |state: &mut ComponentState| &mut state.host,
        )
        .map_err(engine_err)?;
        deadline::add_to_linker(&mut components).map_err(engine_err)?;
        let mut modules = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut modules, |s: &mut ModuleState| &mut s.wasi)
            .map_err(engine_err)?;
        deadline::add_to_module_linker(&mut modules).map_err(engine_err)?;

        let watchdog = deadline::Watchdog::new();
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), stop_ticker.clone());
            let watchdog = watchdog.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                    watchdog.tick();
                }
            });
        }
        Ok(Runtime {
            engine,
            components,
            modules,
            cache: cache.map(cache::Cache::open),
            prepared: Mutex::new(HashMap::new()),
            bubblewrap: tools::bubblewrap().map(Arc::from),
            interrupt: deadline::Interrupt::default(),
            watchdog,
            stop_ticker,
            tracer,
        })
    }

    /// The compiled plugins found damaged in the cache and compiled again since the last
    /// call, each once.
    pub fn take_recompiled(&self) -> Vec<cache::Recompiled> {
        self.cache
            .as_ref()
            .map(cache::Cache::take_recompiled)
            .unwrap_or_default()
    }

    /// Compiles (or loads from the cache) and links a plugin, once per digest. An error is
    /// a [`RuntimeError::Refused`]: the plugin cannot run at all.
    pub fn prepare(&self, plugin: &Plugin) -> Result<(), RuntimeError> {
        self.prepared(plugin).map(|_| ())
    }

    fn prepared(&self, plugin: &Plugin) -> Result<Arc<Prepared>, RuntimeError> {
        if let Some(p) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&plugin.digest)
        {
            return Ok(p.clone());
        }
        let refused = |reason: String| RuntimeError::Refused {
            plugin: plugin.name.clone(),
            reason,
        };
        refusal::check_header(&plugin.bytes).map_err(refused)?;
        let component = plugin.is_component();
        let err = |e: wasmtime::Error| refused(refusal::reason(&e, component));
        let prepared = if component {
            let component =
                cache::component(&self.engine, self.cache.as_ref(), plugin).map_err(err)?;
            let pre = self.components.instantiate_pre(&component).map_err(err)?;
            Prepared::Component(CommandPre::new(pre).map_err(|e| {
                refused(format!(
                    "it is not a WASI command: it must export `wasi:cli/run` ({})",
                    refusal::reason(&e, true)
                ))
            })?)
        } else {
            let module = cache::module(&self.engine, self.cache.as_ref(), plugin).map_err(err)?;
            if module.get_export("_start").is_none() {
                return Err(refused(
                    "the core module has no `_start` export: build it as a WASI command".into(),
                ));
            }
            Prepared::Module(self.modules.instantiate_pre(&module).map_err(err)?)
        };
        let prepared = Arc::new(prepared);
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.digest.clone(), prepared.clone());
        Ok(prepared)
    }

    /// Forgets the plugins loaded before whose digest is not among `digests`: a runtime
    /// kept across runs (`repx run --watch` while a plugin is being rebuilt) holds only
    /// what the run at hand may use.
    pub fn retain<'a>(&self, digests: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::HashSet<&str> = digests.into_iter().collect();
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|digest, _| keep.contains(digest.as_str()));
    }

    /// Interrupts every running plugin, and any started later: each traps at its next tick,
    /// and its host waits (sleeps, polls, tools it runs) end at once.
    pub fn interrupt(&self) {
        self.interrupt.raise();
    }

    /// Makes the store trap when the run is cancelled, the job's time is up, or its
    /// output (found by `output`) is over the limit.
    fn watch<T: 'static>(
        &self,
        store: &mut wasmtime::Store<T>,
        deadline: deadline::Deadline,
        output: fn(&mut T) -> &mut OutputLimit,
    ) {
        store.epoch_deadline_callback(move |mut store| {
            if let Some(why) = deadline.expired() {
                return Err(wasmtime::format_err!("{why}"));
            }
            output(store.data_mut()).tick()?;
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
    }

    /// Runs a plugin once under `job`'s policy.
    pub fn run(&self, plugin: &Plugin, job: JobRun) -> Result<Finished, RuntimeError> {
        let prepared = self.prepared(plugin)?;
        let live = |name: &str| job.live.as_ref().map(|dir| dir.join(name));
        let stdout = LogPipe::new(job.limits.log).live(live("stdout"));
        let stderr = LogPipe::new(job.limits.log).live(live("stderr"));
        let host_live = live("host.log");
        let live_dir = job.live.clone();
        let memory = MemoryBudget::new(job.limits.memory);
        let started = Instant::now();
        let cpu_before = thread_cpu();
        let deadline = deadline::Deadline::new(started, job.limits.time, self.interrupt.clone());
        let output = OutputLimit::new(job.limits.output, job.policy.clone(), started);
        let files = usize::try_from(job.limits.files).unwrap_or(usize::MAX);
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(stdout.clone()).stderr(stderr.clone());
        job.policy
            .apply(&mut builder)
            .map_err(|e| RuntimeError::Plugin {
                plugin: plugin.name.clone(),
                message: format!("cannot give the plugin its directories: {e}"),
            })?;

        // From here until the plugin's run is over, the watchdog wakes this thread from a
        // host call blocked past the deadline.
        let watching = self.watchdog.watch(deadline.clone());
        let (ending, host_log, tool_refused, (peak_memory, tools)) = match &*prepared {
            Prepared::Component(pre) => {
                let mut table = ResourceTable::new();
                // Every open file, directory and stream is an entry of this table.
                table.set_max_capacity(files);
                let state = ComponentState {
                    wasi: builder.build(),
                    table,
                    host: HostState {
                        stage: job.stage,
                        policy: job.policy,
                        grants: job.grants,
                        bubblewrap: self.bubblewrap.clone(),
                        observer: job.observer,
                        log: LogPipe::new(job.limits.log).live(host_live),
                        gate: host::Gate::default(),
                        deadline: deadline.clone(),
                        failed: None,
                        tracer: self.tracer.clone(),
                        refused: false,
                        tool_usage: Default::default(),
                    },
                    memory,
                    output,
                    deadline: deadline.clone(),
                    trace: self.tracer.clone().map(trace::Trace::new),
                };
                let mut store = wasmtime::Store::new(&self.engine, state);
                store.limiter(|s| &mut s.memory);
                self.watch(&mut store, deadline.clone(), |s| &mut s.output);
                let result = pre
                    .instantiate(&mut store)
                    .and_then(|command| command.wasi_cli_run().call_run(&mut store));
                let mut log = store.data().host.log.contents();
                let ending = match (result, &store.data().host.failed) {
                    (_, Some(why)) => Ending::Trap(why.clone()),
                    (Ok(Ok(())), None) => Ending::Exit(0),
                    (Ok(Err(())), None) => Ending::Exit(1),
                    (Err(e), None) => ending_of(e, &job.limits, &mut log),
                };
                let data = store.data();
                let used = (data.memory.peak, data.host.tool_usage);
                (ending, log, data.host.refused, used)
            }
            Prepared::Module(pre) => {
                let mut wasi = builder.build_p1();
                // As for components: every open file and directory is an entry of this table.
                wasi.ctx().table.set_max_capacity(files);
                let state = ModuleState {
                    wasi,
                    memory,
                    output,
                    deadline: deadline.clone(),
                };
                let mut store = wasmtime::Store::new(&self.engine, state);
                store.limiter(|s| &mut s.memory);
                self.watch(&mut store, deadline.clone(), |s| &mut s.output);
                let result = pre.instantiate(&mut store).and_then(|instance| {
                    instance
                        .get_typed_func::<(), ()>(&mut store, "_start")?
                        .call(&mut store, ())
                });
                let mut log = Vec::new();
                let ending = match result {
                    Ok(()) => Ending::Exit(0),
                    Err(e) => ending_of(e, &job.limits, &mut log),
                };
                let used = (store.data().memory.peak, Default::default());
                (ending, log, false, used)
            }
        };
        drop(watching);
        if let Some(dir) = live_dir {
            // The logs go on from the job's own directory once it is committed or failed.
            let _ = std::fs::remove_dir_all(&dir);
            // The directory of all live logs goes with the last of them.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        // An interrupt ends the plugin's host waits early, as if their time had passed: a
        // plugin woken so may finish on time it never had. What it made is not kept. A
        // plugin that ends past its deadline, whatever its ending (a host call the
        // watchdog woke fails with `EINTR`, and the plugin may exit on that), ran out of
        // time.
        let ending = match (ending, deadline.expired()) {
            (Ending::Exit(0), Some(why)) => Ending::Trap(why),
            (ending, _) if deadline.interrupted() => ending,
            (_, Some(why)) => Ending::Trap(why),
            (ending, None) => ending,
        };
        Ok(Finished {
            interrupted: deadline.interrupted(),
            ending,
            tool_refused,
            stdout: stdout.contents(),
            stderr: stderr.contents(),
            host_log,
            usage: Usage {
                cpu: thread_cpu().saturating_sub(cpu_before),
                peak_memory,
                tools,
            },
        })
    }
}

fn ending_of(error: wasmtime::Error, limits: &Limits, host_log: &mut Vec<u8>) -> Ending {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Ending::Exit(exit.0);
    }
    // The whole error, with its wasm backtrace, is for the log; the cause is for the user.
    host_log.extend_from_slice(format!("[trap] {error:?}\n").as_bytes());
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return Ending::Trap(trap.to_string());
    }
    let cause = error.root_cause().to_string();
    if let Some(count) = cause.strip_prefix("resource limit exceeded: ") {
        // The store's count of instances, memories or tables (see [`MemoryBudget`]).
        return Ending::Trap(format!(
            "memory limit: a plugin may have at most {MAX_MEMORIES} linear memories, \
             {MAX_TABLES} tables and {MAX_INSTANCES} module instances ({count})"
        ));
    }
    if let Some(component::ResourceTableError::Full) = error.downcast_ref() {
        return Ending::Trap(format!(
            "open-files limit of {} exceeded (files, directories and streams held at once)",
            limits.files
        ));
    }
    // The outermost context is where in the wasm it happened; the root is what happened
    // (a limit, a refused host call).
    Ending::Trap(cause)
}

pub use cache::{Artifact, Recompiled, artifacts, default_dir as cache_dir};

/// A core module compiled through the compiled-plugin cache in `dir` (when given), keyed
/// by its digest and the engine: `repx plugin preinit` runs the same engine module for
/// every JavaScript build, and compiles it once per machine this way.
pub fn cached_module(
    engine: &wasmtime::Engine,
    dir: Option<std::path::PathBuf>,
    plugin: &Plugin,
) -> wasmtime::Result<wasmtime::Module> {
    cache::module(engine, dir.map(cache::Cache::open).as_ref(), plugin)
}
pub use trace::{Call, Tracer};

#[cfg(test)]
mod tests {
    use super::failed_tool_output;

    #[test]
    fn a_failed_tool_s_output_is_its_command_and_last_lines_with_or_without_a_final_newline() {
        let log = "$ cc -c a.c (in /work)\n[exit status 0]\n$ make (in /work)\nerror: one\nmake: *** Error 1\n[exit status 2]\n";
        assert_eq!(
            failed_tool_output(log),
            ["$ make (in /work)", "error: one", "make: *** Error 1"]
        );
        let unterminated = "$ make (in /work)\nerror: no newline[exit status 2]\n";
        assert_eq!(
            failed_tool_output(unterminated),
            ["$ make (in /work)", "error: no newline"]
        );
        let long: String = std::iter::once("$ make (in /work)\n".to_string())
            .chain((0..30).map(|i| format!("line {i}\n")))
            .chain(std::iter::once("[exit status 1]\n".to_string()))
            .collect();
        let shown = failed_tool_output(&long);
        assert_eq!(shown.first(), Some(&"$ make (in /work)"));
        assert_eq!(shown.last(), Some(&"line 29"));
        assert_eq!(shown.len(), super::STDERR_TAIL_LINES);
    }

    #[test]
    fn a_succeeded_last_tool_or_a_log_without_a_command_shows_nothing() {
        assert!(failed_tool_output("$ make (in /work)\nok\n[exit status 0]\n").is_empty());
        assert!(failed_tool_output("[exit status 2]\n").is_empty());
        assert!(failed_tool_output("[warn] no tool ran\n").is_empty());
    }
}
