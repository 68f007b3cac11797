//! The swaps and pauses planned at checkpoint barriers: [`Swaps`], written by
//! the swap controller (`super::swap`) and read by every subtask of an
//! operator, which applies its [`Plan`] once it has aligned the barrier and
//! waits for the verdict on all of them (all switch or none).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sluice_runtime::Plugin;

use crate::settings::StopHandle;

/// What a subtask does at a planned barrier.
#[derive(Clone)]
pub(crate) enum Plan {
    /// Switch to this plugin (with these params, if new).
    Swap(Arc<Plugin>, Option<String>),
    /// Stop taking input until resumed (upstream backpressures).
    Pause,
}

/// Swaps and pauses planned at checkpoint barriers, shared by the
/// coordinator (which plans) and the operator subtasks (which apply).
#[derive(Default)]
pub(crate) struct Swaps {
    planned: Mutex<HashMap<String, (u64, Plan)>>,
    held: Mutex<std::collections::HashSet<String>>,
    /// Operator → (barrier, whether every subtask's swap succeeded).
    verdicts: Mutex<HashMap<String, (u64, bool)>>,
    decided: std::sync::Condvar,
    /// The run's stop signal: a stop (the CLI's, Ctrl-C, a failure) ends
    /// every pause, so that the paused operator drains and the run ends.
    stop: StopHandle,
    /// The input has ended: no pause holds any more either.
    released: std::sync::atomic::AtomicBool,
}

/// How long a subtask that prepared a swap waits for the verdict on the
/// other subtasks' swaps: only a coordinator that is gone (a failing run)
/// takes this long.
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Swaps {
    /// Swaps of a run that stops with `stop`.
    pub(crate) fn new(stop: StopHandle) -> Self {
        Swaps {
            stop,
            ..Swaps::default()
        }
    }

    /// The input has ended: release every pause (and every later one).
    pub(crate) fn release_all(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every subtask of `operator` prepared its swap at barrier `at`: all
    /// switch (`ok`), or all keep the old plugin.
    pub(crate) fn decide(&self, operator: &str, at: u64, ok: bool) {
        self.verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.to_string(), (at, ok));
        self.decided.notify_all();
    }

    /// Wait for the verdict on the swap of `operator` at barrier `at`
    /// (`false` if none comes in time).
    pub(crate) fn verdict(&self, operator: &str, at: u64) -> bool {
        let deadline = std::time::Instant::now() + VERDICT_WAIT;
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(&(id, ok)) = verdicts.get(operator) {
                if id == at {
                    return ok;
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::error!(operator, "no verdict on the swap at checkpoint {at} within {VERDICT_WAIT:?}; keeping the running plugin");
                return false;
            }
            verdicts = self
                .decided
                .wait_timeout(verdicts, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Operator `operator` switches to `plugin` at barrier `at`.
    pub(crate) fn plan(
        &self,
        operator: &str,
        at: u64,
        plugin: Arc<Plugin>,
        params: Option<String>,
    ) {
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.to_string(), (at, Plan::Swap(plugin, params)));
    }

    /// Operator `operator` pauses after barrier `at`.
    pub(crate) fn plan_pause(&self, operator: &str, at: u64) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.to_string());
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.to_string(), (at, Plan::Pause));
    }

    /// Release a paused operator; whether it was paused.
    pub(crate) fn resume(&self, operator: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(operator)
    }

    /// Whether `operator` is paused (or about to be). Never once the run
    /// is stopping or its input has ended: a paused subtask waits for this
    /// to turn false, and must not hold up the end of the run.
    pub(crate) fn held(&self, operator: &str) -> bool {
        if self.stop.stopped() || self.released.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(operator)
    }

    /// What `operator` does at barrier `id`, if anything is planned.
    pub(crate) fn at(&self, operator: &str, id: u64) -> Option<Plan> {
        let planned = self.planned.lock().unwrap_or_else(|p| p.into_inner());
        planned
            .get(operator)
            .filter(|(at, _)| *at == id)
            .map(|(_, p)| p.clone())
    }

    /// Forget the plan of `operator` (applied, or given up).
    pub(crate) fn done(&self, operator: &str) {
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(operator);
    }
}
