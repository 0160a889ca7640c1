//! Waiting in the host ends at the job's deadline.
//!
//! Epoch interruption stops wasm that runs past its wall-time limit, but a plugin blocked in
//! a host call (a sleep, a poll on a far-off timer) runs no wasm to interrupt: it would
//! hold its worker for as long as it asked. So every timer a component subscribes to is cut
//! at the job's deadline; the call returns, and the next epoch check traps with the limit's
//! message. Timers that end before the deadline are untouched.
//!
//! Components only: a core module's `poll_oneoff` (wasmtime-wasi's preview 1) sleeps on its
//! own and cannot be wrapped from outside, so a core module that sleeps past its limit
//! holds its worker until it wakes.

use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration, Instant as Moment};

/// The monotonic clock of one job, with its deadline.
pub struct DeadlineClock<'a> {
    pub clocks: WasiClocksCtxView<'a>,
    pub deadline: Instant,
}

impl DeadlineClock<'_> {
    /// Nanoseconds until the deadline; zero once it has passed.
    fn remaining(&self) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)
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
        let wait = wait.min(self.remaining());
        monotonic_clock::Host::subscribe_duration(&mut self.clocks, wait)
    }

    fn subscribe_instant(&mut self, when: Moment) -> wasmtime::Result<Resource<DynPollable>> {
        // One reading of the clock, as the plain implementation takes: deterministic jobs'
        // stepping clocks advance the same way.
        let now = monotonic_clock::Host::now(&mut self.clocks)?;
        let wait = when.saturating_sub(now).min(self.remaining());
        monotonic_clock::Host::subscribe_duration(&mut self.clocks, wait)
    }
}

struct HasDeadlineClock;

impl HasData for HasDeadlineClock {
    type Data<'a> = DeadlineClock<'a>;
}

/// A store's state that knows its job's deadline.
pub trait WithDeadline: WasiClocksView + 'static {
    fn deadline(&self) -> Instant;
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
