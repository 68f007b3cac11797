//! What a hot swap needs of the runtime: [`Instance::begin_swap`] makes the
//! new version's instance, hands it the keyed state and the watermark and
//! runs its state migration (`migrator`, journaled as one call);
//! [`Instance::finish_swap`] keeps it or returns to the old instance with the
//! state as it was. When in the stream the swap happens is the dataflow's
//! business (a marker ordered with the data: DESIGN.md, decision 4).

use std::sync::Arc;

use crate::bindings::exports::sluice::operator::migrator;
use crate::bindings::Guest;
use crate::error::CallError;
use crate::instance::{classify, Instance};
use crate::plugin::Plugin;

/// Keys handed to one `migrator.migrate` call.
const MIGRATE_BATCH: usize = 256;

/// The version a hot swap replaces, as a migrating plugin is told
/// (`migrator.needs-migration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousVersion {
    /// Hex SHA-256 of its component.
    pub digest: String,
    /// The contract version it was built for, e.g. `0.1.1`.
    pub contract: String,
    /// Its params, as a JSON object.
    pub params: String,
}

/// A hot swap between [`Instance::begin_swap`] and [`Instance::finish_swap`]:
/// the old instance, kept to return to.
pub struct PendingSwap {
    old: Instance,
    /// Keys the new plugin's migration rewrote (`None`: it did not migrate).
    pub migrated: Option<u64>,
}

impl Instance {
    /// Prepare a hot swap to `plugin` (with new `params` if given): a new
    /// instance, initialised, that takes over the keyed state and the
    /// watermark, after it migrated the state if it exports `migrator` and
    /// asks to (see `migrate_open`). From here this
    /// `Instance` is the new one; [`finish_swap`](Self::finish_swap) keeps
    /// it or goes back to the old one, with the state as it was. On error
    /// nothing changed: this instance still runs the old plugin.
    pub fn begin_swap(
        &mut self,
        plugin: Arc<Plugin>,
        params: Option<String>,
    ) -> Result<PendingSwap, CallError> {
        let previous = PreviousVersion {
            digest: self.plugin.info.digest.clone(),
            contract: self.plugin.info.version.clone(),
            params: self.config.params.clone(),
        };
        let state = self.store.data_mut().state.take();
        let metrics = self.store.data().metrics.clone();
        let watermark = self.store.data().watermark;
        let mut config = self.config.clone();
        if let Some(p) = params {
            config.params = p;
        }
        let mut fresh = match plugin.instantiate_keeping(config, state, metrics) {
            Ok(fresh) => fresh,
            Err((e, state)) => {
                self.store.data_mut().state = state;
                return Err(e);
            }
        };
        fresh.set_watermark(watermark);
        match fresh.migrate_open(&previous) {
            Ok(migrated) => Ok(PendingSwap {
                old: std::mem::replace(self, fresh),
                migrated,
            }),
            Err(e) => {
                self.store.data_mut().state = fresh.store.data_mut().state.take();
                Err(e)
            }
        }
    }

    /// End a swap that [`begin_swap`](Self::begin_swap) prepared: keep the
    /// new plugin (`commit`), or return to the old one with the state as it
    /// was before the migration.
    pub fn finish_swap(&mut self, pending: PendingSwap, commit: bool) {
        let data = self.store.data_mut();
        if commit {
            if let Some(state) = &mut data.state {
                state.commit_call();
            }
            return;
        }
        data.timer_ops.clear();
        let mut state = data.state.take();
        if let Some(s) = &mut state {
            s.rollback_call();
        }
        *self = pending.old;
        self.store.data_mut().state = state;
    }

    /// Run `plugin` from now on: [`begin_swap`](Self::begin_swap) and keep
    /// it. Returns how many keys its migration rewrote.
    pub fn swap(
        &mut self,
        plugin: Arc<Plugin>,
        params: Option<String>,
    ) -> Result<Option<u64>, CallError> {
        let pending = self.begin_swap(plugin, params)?;
        let migrated = pending.migrated;
        self.finish_swap(pending, true);
        Ok(migrated)
    }

    /// The plugin's state migration from `from`: `needs-migration`, then, if
    /// it says so, `migrate` over every key of this subtask's key groups in
    /// batches. All or nothing: if a call fails, every state write of the
    /// migration is undone; on success the writes stay journaled
    /// (uncommitted) until [`finish_swap`](Self::finish_swap). Returns how
    /// many keys were migrated (`None`: nothing to do — no `migrator`, no
    /// keyed state, or not needed). Timers it registers are applied like a
    /// call's ([`take_timer_ops`](Self::take_timer_ops)).
    fn migrate_open(&mut self, from: &PreviousVersion) -> Result<Option<u64>, CallError> {
        let Guest::Process {
            migrator: Some(m), ..
        } = &self.guest
        else {
            return Ok(None);
        };
        let m = m.clone();
        if self.store.data().state.is_none() {
            return Ok(None);
        }
        let previous = migrator::PreviousVersion {
            digest: from.digest.clone(),
            contract: from.contract.clone(),
            params: from.params.clone(),
        };
        self.arm()?;
        match m.call_needs_migration(&mut self.store, &previous) {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(None),
            Ok(Err(msg)) => return Err(CallError::Init(format!("needs-migration refused: {msg}"))),
            Err(e) => return Err(classify(e, &self.store, &self.config)),
        }
        use sluice_state::keygroup::{range_of, MAX_PARALLELISM};
        let groups = range_of(
            self.config.subtask,
            MAX_PARALLELISM,
            self.config.parallelism.max(1),
        );
        let data = self.store.data_mut();
        let state = data.state.as_mut().expect("checked above");
        let keys = state.keys(groups).map_err(|e| {
            CallError::Trap(format!("listing the keys of the state to migrate: {e}"))
        })?;
        // One journal for the whole migration (not one per call), so that a
        // failure in any batch undoes every batch.
        state.begin_call();
        data.timer_ops.clear();
        let mut failure = None;
        for chunk in keys.chunks(MIGRATE_BATCH) {
            let data = self.store.data_mut();
            data.keys.clear();
            data.key_bytes.clear();
            data.current = 0;
            for (kg, k) in chunk {
                let start = data.key_bytes.len() as u32;
                data.key_bytes.extend_from_slice(k);
                data.keys.push(Some((*kg, start, k.len() as u32)));
            }
            let list: Vec<Vec<u8>> = chunk.iter().map(|(_, k)| k.clone()).collect();
            if let Err(e) = self.arm() {
                failure = Some(e);
                break;
            }
            match m.call_migrate(&mut self.store, &list) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let key = list.get(e.input as usize).map_or_else(
                        || format!("#{}", e.input),
                        |k| format!("{:?}", String::from_utf8_lossy(k)),
                    );
                    failure = Some(CallError::Migration {
                        key,
                        message: e.message,
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(classify(e, &self.store, &self.config));
                    break;
                }
            }
        }
        let data = self.store.data_mut();
        let state = data.state.as_mut().expect("checked above");
        match failure {
            None => Ok(Some(keys.len() as u64)),
            Some(e) => {
                state.rollback_call();
                data.timer_ops.clear();
                Err(e)
            }
        }
    }
}
