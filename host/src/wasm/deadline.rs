//! Waiting in the host ends at the job's deadline, or at once when the run is interrupted.
//!
//! Epoch interruption stops wasm that runs past its wall-time limit or after the run was
//! interrupted (Ctrl-C, SIGTERM), but a plugin blocked in a host call (a sleep, a poll on
//! a far-off timer, a tool it runs, an `open` that waits in the kernel) runs no wasm to
//! interrupt: it would hold its worker for as long as it asked, and the run could not
//! stop. So:
//!
//! - every timer a component subscribes to is cut at the job's deadline, and wakes when
//!   the run's [`Interrupt`] is raised;
//! - a core module's `poll_oneoff` on clocks alone (its sleeps) is replaced by one that
//!   waits the same way ([`add_to_module_linker`]); on files, it never waits;
//! - tools a plugin runs are stopped on the same [`Deadline`] (see `tools::run`);
//! - the [`Watchdog`] signals, at every tick, each job thread whose deadline has passed
//!   (or all of them once the run is interrupted): a system call blocked in the kernel,
//!   such as the `open` of a FIFO no one writes, returns `EINTR`. The signal's handler
//!   does nothing and is installed without `SA_RESTART`, so nothing else changes.
//!
//! The call returns, and the next epoch check traps with the limit's message or the
//! interruption; a job that ends after its deadline, however it ends, is reported as over
//! its time limit (see `Runtime::run`). Timers that end before the deadline, in a run not
//! interrupted, are untouched. Special files, whose `open` can block, are refused before
//! that (`super::open`).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::Poll;
use std::time::{Duration as StdDuration, Instant};

use tokio::sync::Notify;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration, Instant as Moment};
use wasmtime_wasi::p2::bindings::clocks::wall_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use crate::lab::limits;

/// Why a job of an interrupted run failed.
pub const INTERRUPTED: &str = "interrupted: the run was cancelled";

/// A run's interruption: raised once, seen by every job's waits, including those already
/// blocked.
#[derive(Clone, Default)]
pub struct Interrupt(Arc<Raised>);

#[derive(Default)]
struct Raised {
    flag: AtomicBool,
    /// Wakes timers blocked in a poll.
    wake: Notify,
}

impl Interrupt {
    /// Interrupts the run: every wait of every job ends.
    pub fn raise(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.wake.notify_waiters();
    }

    pub fn is_raised(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Resolves once the interrupt is raised.
    async fn raised(&self) {
        let mut woken = pin!(self.0.wake.notified());
        // Registered before the flag is read: a raise in between still wakes it.
        woken.as_mut().enable();
        if !self.is_raised() {
            woken.await;
        }
    }
}

/// When a job's waits end: at its wall-time limit, or now once the run is interrupted.
#[derive(Clone)]
pub struct Deadline {
    at: Instant,
    /// The job's wall-time limit, for messages.
    limit: StdDuration,
    interrupt: Interrupt,
}

impl Deadline {
    /// The deadline of a job that started at `started`, with wall-time limit `limit`.
    pub fn new(started: Instant, limit: StdDuration, interrupt: Interrupt) -> Deadline {
        Deadline {
            at: started + limit,
            limit,
            interrupt,
        }
    }

    /// Whether the run was interrupted.
    pub fn interrupted(&self) -> bool {
        self.interrupt.is_raised()
    }

    /// Time left to wait; zero once the wall time is up or the run is interrupted.
    pub fn remaining(&self) -> StdDuration {
        if self.interrupted() {
            StdDuration::ZERO
        } else {
            self.at.saturating_duration_since(Instant::now())
        }
    }

    /// Why the job must stop now, if it must: the run was interrupted, or its time is up.
    pub fn expired(&self) -> Option<String> {
        if self.interrupted() {
            Some(INTERRUPTED.into())
        } else if Instant::now() >= self.at {
            Some(self.exceeded())
        } else {
            None
        }
    }

    /// The failure of a job past its wall-time limit.
    pub fn exceeded(&self) -> String {
        format!(
            "wall-time limit of {} exceeded",
            limits::duration(self.limit)
        )
    }
}

/// Wakes job threads blocked in a host call once their deadline has passed, or the run
/// was interrupted, by signalling them at every tick (see the module docs). A thread is
/// watched only while it runs a plugin: [`Watchdog::watch`] registers it, the guard it
/// returns takes it off before the thread can go on to anything else.
#[derive(Clone, Default)]
pub struct Watchdog(Arc<Mutex<Vec<Watched>>>);

struct Watched {
    thread: Thread,
    deadline: Deadline,
}

/// A thread's id, to signal it.
#[derive(Clone, Copy)]
struct Thread(libc::pthread_t);

// SAFETY: a `pthread_t` only names a thread (musl makes it a pointer, never dereferenced
// here); any thread may signal or compare it.
unsafe impl Send for Thread {}

/// The signal that wakes a blocked thread: ignored by default, unused by anything else
/// here, so a stray one changes nothing.
const WAKE: libc::c_int = libc::SIGURG;

/// Installs the handler of [`WAKE`], once per process: it does nothing, and without
/// `SA_RESTART` a blocking system call it lands in returns `EINTR`. `SA_ONSTACK` runs it
/// on the signal stack wasmtime gives threads that run wasm.
fn install_wake_handler() {
    static ONCE: Once = Once::new();
    extern "C" fn nothing(_: libc::c_int) {}
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is valid (no flags, empty mask); the handler is
        // async-signal-safe, as it does nothing.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(WAKE, &action, std::ptr::null_mut());
        }
    });
}

impl Watchdog {
    pub fn new() -> Watchdog {
        install_wake_handler();
        Watchdog::default()
    }

    /// Watches the calling thread, with `deadline`, until the guard is dropped.
    pub fn watch(&self, deadline: Deadline) -> Watching<'_> {
        // SAFETY: `pthread_self` has no preconditions.
        let thread = Thread(unsafe { libc::pthread_self() });
        self.threads().push(Watched { thread, deadline });
        Watching {
            watchdog: self,
            thread,
        }
    }

    /// At a tick: signals every watched thread whose deadline has passed.
    pub fn tick(&self) {
        let threads = self.threads();
        for watched in threads.iter() {
            if watched.deadline.expired().is_some() {
                // SAFETY: the thread is alive: it takes itself off the list (under this
                // lock) before it leaves the plugin's run.
                unsafe { libc::pthread_kill(watched.thread.0, WAKE) };
            }
        }
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread being watched; dropping it ends the watch.
pub struct Watching<'a> {
    watchdog: &'a Watchdog,
    thread: Thread,
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut threads = self.watchdog.threads();
        // SAFETY: `pthread_equal` only compares.
        if let Some(at) = threads
            .iter()
            .position(|w| unsafe { libc::pthread_equal(w.thread.0, self.thread.0) } != 0)
        {
            threads.swap_remove(at);
        }
    }
}

/// The monotonic clock of one job, with its deadline.
pub struct DeadlineClock<'a> {
    pub clocks: WasiClocksCtxView<'a>,
    pub deadline: Deadline,
}

impl DeadlineClock<'_> {
    /// A pollable ready after `wait`, or when the run is interrupted, whichever is first.
    fn timer(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let wait = StdDuration::from_nanos(wait).min(self.deadline.remaining());
        let until = if wait.is_zero() {
            Until::Now { yielded: false }
        } else {
            // Never reached past the deadline's own horizon, but do not trap on it.
            tokio::time::Instant::now()
                .checked_add(wait)
                .map_or(Until::Never, Until::At)
        };
        let timer = self.clocks.table.push(Timer {
            until,
            interrupt: self.deadline.interrupt.clone(),
        })?;
        subscribe(self.clocks.table, timer)
    }
}

/// When a [`Timer`] is ready, unless the run is interrupted first.
enum Until {
    Now { yielded: bool },
    At(tokio::time::Instant),
    Never,
}

/// wasmtime-wasi's monotonic-clock timer, also woken by the run's interrupt.
struct Timer {
    until: Until,
    interrupt: Interrupt,
}

#[async_trait]
impl Pollable for Timer {
    async fn ready(&mut self) {
        let at = match &mut self.until {
            Until::Now { yielded: true } => return,
            Until::Now { yielded } => {
                // As wasmtime-wasi's own timer: a guest polling in a busy loop with a zero
                // timeout lets tokio's other work run.
                *yielded = true;
                return tokio::task::yield_now().await;
            }
            Until::At(at) => Some(*at),
            Until::Never => None,
        };
        let mut raised = pin!(self.interrupt.raised());
        let mut slept = pin!(async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        std::future::poll_fn(|cx| {
            if raised.as_mut().poll(cx).is_ready() || slept.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl monotonic_clock::Host for DeadlineClock<'_> {
    fn now(&mut self) -> wasmtime::Result<Moment> {
        monotonic_clock::Host::now(&mut self.clocks)
    }

    fn resolution(&mut self) -> wasmtime::Result<Duration> {
        monotonic_clock::Host::resolution(&mut self.clocks)
    }

    fn subscribe_duration(&mut self, wait: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.timer(wait)
    }

    fn subscribe_instant(&mut self, when: Moment) -> wasmtime::Result<Resource<DynPollable>> {
        // One reading of the clock, as the plain implementation takes: deterministic jobs'
        // stepping clocks advance the same way.
        let now = monotonic_clock::Host::now(&mut self.clocks)?;
        self.timer(when.saturating_sub(now))
    }
}

struct HasDeadlineClock;

impl HasData for HasDeadlineClock {
    type Data<'a> = DeadlineClock<'a>;
}

/// A store's state that knows its job's deadline.
pub trait WithDeadline: WasiClocksView + 'static {
    fn deadline(&self) -> Deadline;
}

/// Replaces `wasi:clocks/monotonic-clock` in a linker that already has WASI.
pub fn add_to_linker<T: WithDeadline>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = monotonic_clock::add_to_linker::<T, HasDeadlineClock>(linker, |state| {
        let deadline = state.deadline();
        DeadlineClock {
            clocks: state.clocks(),
            deadline,
        }
    });
    linker.allow_shadowing(false);
    added
}

/// Waits `wait`, cut at the deadline, and no longer once the run is interrupted.
fn sleep(deadline: &Deadline, wait: StdDuration) {
    let wait = wait.min(deadline.remaining());
    if wait.is_zero() {
        return;
    }
    let until = tokio::time::Instant::now()
        .checked_add(wait)
        .map_or(Until::Never, Until::At);
    let mut timer = Timer {
        until,
        interrupt: deadline.interrupt.clone(),
    };
    wasmtime_wasi::runtime::in_tokio(timer.ready());
}

/// The module a core module's WASI imports come from.
const PREVIEW1: &str = "wasi_snapshot_preview1";

/// Sizes and offsets of preview 1's `subscription` and `event` records.
const SUBSCRIPTION: usize = 48;
const EVENT: usize = 32;
/// `errno::fault`: a pointer out of the guest's memory.
const FAULT: i32 = 21;

/// A core module's store state, as its `poll_oneoff` sees it.
pub trait ModuleWaits: Send + 'static {
    fn wasi(&mut self) -> &mut WasiP1Ctx;
    fn deadline(&self) -> Deadline;
}

/// Replaces `poll_oneoff` in a core-module linker that already has WASI preview 1.
///
/// A poll on clocks alone (how wasi-libc sleeps) waits here, cut at the deadline and
/// woken by the interrupt, and traps then with the reason; its events are the clocks due,
/// as wasmtime-wasi reports them. A poll that includes files or streams goes to
/// wasmtime-wasi's own, which does not wait: a plugin's files and stdio are always ready.
pub fn add_to_module_linker<T: ModuleWaits>(
    linker: &mut wasmtime::Linker<T>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = linker
        .func_wrap(
            PREVIEW1,
            "poll_oneoff",
            move |mut caller: wasmtime::Caller<'_, T>,
                  subs: i32,
                  events: i32,
                  count: i32,
                  written: i32|
                  -> wasmtime::Result<i32> {
                let args = (subs, events, count, written);
                match clock_poll(&mut caller, args)? {
                    Some(errno) => Ok(errno),
                    None => delegate(&mut caller, args),
                }
            },
        )
        .map(drop);
    linker.allow_shadowing(false);
    added
}

/// wasmtime-wasi's own `poll_oneoff`, on the caller's memory.
///
/// Called directly rather than as a `Func` of the linker: a host function called from
/// another finds no calling instance, so no `memory`, and would trap.
fn delegate<T: ModuleWaits>(
    caller: &mut wasmtime::Caller<'_, T>,
    (subs, events, count, written): (i32, i32, i32, i32),
) -> wasmtime::Result<i32> {
    use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1;
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return Ok(FAULT);
    };
    // What wasmtime-wasi may allocate for the call, as its own glue grants it.
    let fuel = wasmtime::AsContextMut::as_context_mut(&mut *caller).hostcall_fuel();
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    state.wasi().set_hostcall_fuel(fuel);
    let mut guest = wiggle::GuestMemory::Unshared(&mut *data);
    let polled = wasmtime_wasi::runtime::in_tokio(WasiSnapshotPreview1::poll_oneoff(
        state.wasi(),
        &mut guest,
        wiggle::GuestPtr::new(subs as u32),
        wiggle::GuestPtr::new(events as u32),
        count as u32,
    ));
    let count = match polled {
        Ok(count) => count,
        Err(error) => return Ok(error.downcast()? as i32),
    };
    let at = written as u32 as usize;
    match data.get_mut(at..at + 4) {
        Some(out) => {
            out.copy_from_slice(&count.to_le_bytes());
            Ok(0)
        }
        None => Ok(FAULT),
    }
}

/// `poll_oneoff` on clocks alone: the errno it returns, or `None` for any other poll
/// (files, streams, clocks preview 1 cannot wait on), which wasmtime-wasi answers.
fn clock_poll<T: ModuleWaits>(
    caller: &mut wasmtime::Caller<'_, T>,
    (subs, events, count, written): (i32, i32, i32, i32),
) -> wasmtime::Result<Option<i32>> {
    let Some(memory) = caller
        .get_export("memory")
        .and_then(|export| export.into_memory())
    else {
        return Ok(None);
    };
    let (subs, events, written) = (
        subs as u32 as usize,
        events as u32 as usize,
        written as u32 as usize,
    );
    let count = count as u32 as usize;
    if count == 0 {
        return Ok(None);
    }
    let Some(records) = count
        .checked_mul(SUBSCRIPTION)
        .and_then(|len| memory.data(&*caller).get(subs..subs.checked_add(len)?))
    else {
        return Ok(Some(FAULT));
    };
    let u64_at =
        |record: &[u8], at: usize| u64::from_le_bytes(record[at..at + 8].try_into().unwrap());
    // (userdata, clock id, timeout, absolute) of each subscription.
    let mut clocks = Vec::with_capacity(count);
    for record in records.chunks_exact(SUBSCRIPTION) {
        if record[8] != 0 {
            return Ok(None);
        }
        let id = u32::from_le_bytes(record[16..20].try_into().unwrap());
        let absolute = u16::from_le_bytes(record[40..42].try_into().unwrap()) & 1 != 0;
        clocks.push((u64_at(record, 0), id, u64_at(record, 24), absolute));
    }
    let mut waits = Vec::with_capacity(count);
    for &(_, id, timeout, absolute) in &clocks {
        let clocks = &mut caller.data_mut().wasi().clocks();
        let now = match (id, absolute) {
            (0 | 1, false) => 0,
            (1, true) => monotonic_clock::Host::now(clocks)?,
            (0, true) => {
                let now = wall_clock::Host::now(clocks)?;
                now.seconds * 1_000_000_000 + u64::from(now.nanoseconds)
            }
            _ => return Ok(None),
        };
        waits.push(timeout.saturating_sub(now));
    }
    let shortest = waits.iter().copied().min().unwrap_or(0);
    let deadline = caller.data_mut().deadline();
    sleep(&deadline, StdDuration::from_nanos(shortest));
    if let Some(why) = deadline.expired() {
        return Err(wasmtime::format_err!("{why}"));
    }
    let due: Vec<u64> = clocks
        .iter()
        .zip(&waits)
        .filter(|(_, wait)| **wait <= shortest)
        .map(|((userdata, ..), _)| *userdata)
        .collect();
    let data = memory.data_mut(&mut *caller);
    let Some(out) = (due.len() * EVENT)
        .checked_add(events)
        .and_then(|end| data.get_mut(events..end))
    else {
        return Ok(Some(FAULT));
    };
    for (event, userdata) in out.chunks_exact_mut(EVENT).zip(&due) {
        // A clock event without error: the user data, then zeros (`eventtype::clock` is 0).
        event.fill(0);
        event[..8].copy_from_slice(&userdata.to_le_bytes());
    }
    let Some(slot) = data.get_mut(written..written.saturating_add(4)) else {
        return Ok(Some(FAULT));
    };
    slot.copy_from_slice(&(due.len() as u32).to_le_bytes());
    Ok(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        wasmtime_wasi::runtime::in_tokio(f)
    }

    #[test]
    fn an_interrupt_ends_a_timer_already_waiting() {
        let interrupt = Interrupt::default();
        let mut timer = Timer {
            until: Until::At(tokio::time::Instant::now() + StdDuration::from_secs(3600)),
            interrupt: interrupt.clone(),
        };
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(StdDuration::from_millis(50));
            interrupt.raise();
        });
        // Unwoken, it would wait an hour: this bound only keeps a failure from hanging.
        let woke = block_on(async {
            tokio::time::timeout(StdDuration::from_secs(60), timer.ready()).await
        });
        assert!(woke.is_ok(), "the timer slept through the interrupt");
        raiser.join().unwrap();
    }

    #[test]
    fn an_interrupted_deadline_leaves_no_time() {
        let interrupt = Interrupt::default();
        let deadline = Deadline::new(Instant::now(), StdDuration::from_secs(3600), interrupt);
        assert!(deadline.remaining() > StdDuration::from_secs(60));
        deadline.interrupt.raise();
        assert!(deadline.interrupted());
        assert_eq!(deadline.remaining(), StdDuration::ZERO);
    }
}
