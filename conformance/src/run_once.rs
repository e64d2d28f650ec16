//! Work that several tests of one binary share: the first test to ask runs it, every other
//! waits for it and gets how it ended (the fault and kill tests run slow cases side by side
//! this way).

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// One outcome per name, made once by the first caller of that name.
pub struct RunOnce<T> {
    runs: Mutex<BTreeMap<&'static str, Arc<OnceLock<T>>>>,
}

impl<T: Clone> RunOnce<T> {
    /// No runs yet (usable in a `static`).
    pub const fn new() -> Self {
        RunOnce {
            runs: Mutex::new(BTreeMap::new()),
        }
    }

    /// The outcome of `name`: made by `run` when no caller made it before, else waited for.
    pub fn get_or_run(&self, name: &'static str, run: impl FnOnce() -> T) -> T {
        let of_name = self
            .runs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .clone();
        of_name.get_or_init(run).clone()
    }
}

impl<T: Clone> Default for RunOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The message a panicking thread left.
pub fn panic_text(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}
