//! Fixture for hot swaps: a process operator whose `init` traps (panics),
//! so a deploy of it must be rejected and the running version kept.

use sluice_sdk::{Context, Error, Params, Record};

fn refuse(_params: &Params) -> Result<(), Error> {
    panic!("fixture-init-fails refuses to start")
}

/// Never reached: `init` fails first.
#[sluice_sdk::process(init = refuse)]
pub fn never(record: Record, ctx: &mut Context) -> Result<(), Error> {
    ctx.emit(record);
    Ok(())
}
