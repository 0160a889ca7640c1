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
mod output;
pub mod policy;
mod refusal;
mod streams;
pub mod tools;

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
    pub bytes: Arc<[u8]>,
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
            digest: blake3::hash(&bytes).to_hex().to_string(),
            bytes: bytes.into(),
        }
    }

    pub fn is_component(&self) -> bool {
        // Core modules are version 1; components carry layer 1 in the same four bytes.
        self.bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
    }
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
    memory: MemoryLimit,
    output: OutputLimit,
    /// When the job's wall time is up or the run is interrupted; host calls that wait
    /// end there.
    deadline: deadline::Deadline,
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
    memory: MemoryLimit,
    output: OutputLimit,
}

/// Refuses memory growth past the stage's limit, as a trap naming the limit.
struct MemoryLimit(u64);

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.0 {
            return Err(wasmtime::format_err!(
                "memory limit of {} exceeded (the plugin asked for {})",
                limits::bytes(self.0),
                limits::bytes(desired as u64)
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// Everything one job run needs besides the plugin.
pub struct JobRun {
    pub stage: String,
    pub policy: Arc<Policy>,
    pub grants: Arc<[ToolIdentity]>,
    pub observer: Arc<dyn Observer>,
    pub limits: Limits,
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
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub host_log: Vec<u8>,
}

/// Why a job of an interrupted run failed.
const INTERRUPTED: &str = "interrupted: the run was cancelled";

/// How many lines of stderr a failure message carries, and how many characters of each: the
/// message goes to the terminal, whatever the plugin printed; its log has the rest.
const STDERR_TAIL_LINES: usize = 10;
const STDERR_TAIL_CHARS: usize = 300;

impl Finished {
    /// Why the run failed, with the tail of its stderr; `None` when it succeeded.
    pub fn failure(&self) -> Option<String> {
        let failure = match &self.ending {
            Ending::Exit(0) => return None,
            Ending::Exit(code) => format!("exit status {code}"),
            Ending::Trap(trap) => format!("trap: {}", trap.lines().next().unwrap_or_default()),
        };
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        let tail: Vec<String> = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..]
            .iter()
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

pub struct Runtime {
    engine: Engine,
    components: component::Linker<ComponentState>,
    modules: wasmtime::Linker<ModuleState>,
    cache: Option<PathBuf>,
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    bubblewrap: Option<Arc<Path>>,
    interrupt: deadline::Interrupt,
    /// Tells the epoch ticker thread to stop.
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// `cache` is where compiled plugins are kept; it must be a directory no plugin is given.
    pub fn new(cache: Option<PathBuf>, concurrency: usize) -> Result<Runtime, RuntimeError> {
        let engine_err = |e: wasmtime::Error| RuntimeError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        let slots = (concurrency as u32).max(4) * 4;
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
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
        host::repx::stage::host::add_to_linker::<_, component::HasSelf<HostState>>(
            &mut components,
            |state: &mut ComponentState| &mut state.host,
        )
        .map_err(engine_err)?;
        deadline::add_to_linker(&mut components).map_err(engine_err)?;
        let mut modules = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut modules, |s: &mut ModuleState| &mut s.wasi)
            .map_err(engine_err)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), stop_ticker.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            });
        }
        Ok(Runtime {
            engine,
            components,
            modules,
            cache,
            prepared: Mutex::new(HashMap::new()),
            bubblewrap: tools::bubblewrap().map(Arc::from),
            interrupt: deadline::Interrupt::default(),
            stop_ticker,
        })
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
                cache::component(&self.engine, self.cache.as_deref(), plugin).map_err(err)?;
            let pre = self.components.instantiate_pre(&component).map_err(err)?;
            Prepared::Component(CommandPre::new(pre).map_err(|e| {
                refused(format!(
                    "it is not a WASI command: it must export `wasi:cli/run` ({})",
                    refusal::reason(&e, true)
                ))
            })?)
        } else {
            let module = cache::module(&self.engine, self.cache.as_deref(), plugin).map_err(err)?;
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
        deadline: Instant,
        time: Duration,
        output: fn(&mut T) -> &mut OutputLimit,
    ) {
        let interrupt = self.interrupt.clone();
        store.epoch_deadline_callback(move |mut store| {
            if interrupt.is_raised() {
                return Err(wasmtime::format_err!("{INTERRUPTED}"));
            }
            if Instant::now() >= deadline {
                return Err(wasmtime::format_err!(
                    "wall-time limit of {} exceeded",
                    limits::duration(time)
                ));
            }
            output(store.data_mut()).tick()?;
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
    }

    /// Runs a plugin once under `job`'s policy.
    pub fn run(&self, plugin: &Plugin, job: JobRun) -> Result<Finished, RuntimeError> {
        let prepared = self.prepared(plugin)?;
        let stdout = LogPipe::new(job.limits.log);
        let stderr = LogPipe::new(job.limits.log);
        let memory = MemoryLimit(job.limits.memory);
        let started = Instant::now();
        let deadline = started + job.limits.time;
        let waits = deadline::Deadline::new(deadline, self.interrupt.clone());
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

        let (ending, host_log) = match &*prepared {
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
                        log: LogPipe::new(job.limits.log),
                        gate: host::Gate::default(),
                        deadline: waits.clone(),
                    },
                    memory,
                    output,
                    deadline: waits,
                };
                let mut store = wasmtime::Store::new(&self.engine, state);
                store.limiter(|s| &mut s.memory);
                self.watch(&mut store, deadline, job.limits.time, |s| &mut s.output);
                let result = pre
                    .instantiate(&mut store)
                    .and_then(|command| command.wasi_cli_run().call_run(&mut store));
                let mut log = store.data().host.log.contents();
                let ending = match result {
                    Ok(Ok(())) => Ending::Exit(0),
                    Ok(Err(())) => Ending::Exit(1),
                    Err(e) => ending_of(e, &job.limits, &mut log),
                };
                (ending, log)
            }
            Prepared::Module(pre) => {
                let mut wasi = builder.build_p1();
                // As for components: every open file and directory is an entry of this table.
                wasi.ctx().table.set_max_capacity(files);
                let state = ModuleState {
                    wasi,
                    memory,
                    output,
                };
                let mut store = wasmtime::Store::new(&self.engine, state);
                store.limiter(|s| &mut s.memory);
                self.watch(&mut store, deadline, job.limits.time, |s| &mut s.output);
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
                (ending, log)
            }
        };
        // An interrupt ends the plugin's host waits early, as if their time had passed: a
        // plugin woken so may finish on time it never had. What it made is not kept.
        let ending = match ending {
            Ending::Exit(0) if self.interrupt.is_raised() => Ending::Trap(INTERRUPTED.into()),
            ending => ending,
        };
        Ok(Finished {
            ending,
            stdout: stdout.contents(),
            stderr: stderr.contents(),
            host_log,
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
    if let Some(component::ResourceTableError::Full) = error.downcast_ref() {
        return Ending::Trap(format!(
            "open-files limit of {} exceeded (files, directories and streams held at once)",
            limits.files
        ));
    }
    // The outermost context is where in the wasm it happened; the root is what happened
    // (a limit, a refused host call).
    Ending::Trap(error.root_cause().to_string())
}

pub use cache::default_dir as cache_dir;
