//! All integration tests in one binary (faster to link than many), one module
//! per area. Plugins must be built first: `scripts/test` does it.

mod bad_input;
mod checkpoints;
mod event_time;
mod exact_event_time;
mod examples;
mod hostile_returns;
mod hot_swap;
mod kafka;
mod keyed_state;
mod plugin_project;
mod policies;
mod sandbox;
mod security;
mod state_dir;
mod taxi_golden;

// The same allocator as the `sluice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
