//! Waiting in the host ends at the job's deadline, or at once when the run is interrupted.
//!
//! Epoch interruption stops wasm that runs past its wall-time limit or after the run was
//! interrupted (Ctrl-C, SIGTERM), but a plugin blocked in a host call (a sleep, a poll on
//! a far-off timer, a tool it runs) runs no wasm to interrupt: it would hold its worker
//! for as long as it asked, and the run could not stop. So every timer a component
//! subscribes to is cut at the job's deadline, and wakes when the run's [`Interrupt`] is
//! raised; the call returns, and the next epoch check traps with the limit's message or
//! the interruption. Tools a plugin runs are stopped on the same [`Deadline`] (see
//! `tools::run`). Timers that end before the deadline, in a run not interrupted, are
//! untouched.
//!
//! Components only: a core module's `poll_oneoff` (wasmtime-wasi's preview 1) sleeps on its
//! own and cannot be wrapped from outside, so a core module that sleeps past its limit, or
//! through an interruption, holds its worker until it wakes.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration as StdDuration, Instant};

use tokio::sync::Notify;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::async_trait;
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration, Instant as Moment};
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

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
    interrupt: Interrupt,
}

impl Deadline {
    pub fn new(at: Instant, interrupt: Interrupt) -> Deadline {
        Deadline { at, interrupt }
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
        let deadline = Deadline::new(Instant::now() + StdDuration::from_secs(3600), interrupt);
        assert!(deadline.remaining() > StdDuration::from_secs(60));
        deadline.interrupt.raise();
        assert!(deadline.interrupted());
        assert_eq!(deadline.remaining(), StdDuration::ZERO);
    }
}
