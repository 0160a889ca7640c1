//! Ctrl-C (and SIGTERM, how `scancel` stops an allocation): one handler for the process.
//!
//! A handler can be set once per process, yet `repx run --watch` runs many times in one.
//! So the handler is set on first use and acts on what is current: it sets the process's
//! interrupted flag (never cleared: an interrupt ends the command), interrupts the runtime
//! of the run going on, if any, and wakes a waiting watcher.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::wasm::Runtime;

type Wake = Box<dyn Fn() + Send>;

struct Handler {
    interrupted: Arc<AtomicBool>,
    runtime: Mutex<Option<Arc<Runtime>>>,
    wake: Mutex<Option<Wake>>,
}

static HANDLER: OnceLock<Handler> = OnceLock::new();

fn handler() -> &'static Handler {
    HANDLER.get_or_init(|| {
        let _ = ctrlc::set_handler(|| {
            // Set once the lock below is initialised; a signal before that finds the
            // flag unset in no run at all.
            let Some(handler) = HANDLER.get() else {
                return;
            };
            handler.interrupted.store(true, Ordering::Relaxed);
            if let Some(runtime) = lock(&handler.runtime).as_ref() {
                runtime.interrupt();
            }
            if let Some(wake) = lock(&handler.wake).as_ref() {
                wake();
            }
        });
        Handler {
            interrupted: Arc::new(AtomicBool::new(false)),
            runtime: Mutex::new(None),
            wake: Mutex::new(None),
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes `runtime` the one an interrupt stops; the flag an interrupt sets.
pub fn arm(runtime: Arc<Runtime>) -> Arc<AtomicBool> {
    let handler = handler();
    *lock(&handler.runtime) = Some(runtime);
    handler.interrupted.clone()
}

/// The flag an interrupt sets, before any runtime is armed.
pub fn flag() -> Arc<AtomicBool> {
    handler().interrupted.clone()
}

/// Calls `wake` on every later interrupt, to stop a wait.
pub fn on_interrupt(wake: impl Fn() + Send + 'static) {
    *lock(&handler().wake) = Some(Box::new(wake));
}

/// Whether the command was interrupted.
pub fn interrupted() -> bool {
    handler().interrupted.load(Ordering::Relaxed)
}
