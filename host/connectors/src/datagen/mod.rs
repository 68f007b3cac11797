//! Synthetic sources: deterministic datasets generated in the host, so a
//! pipeline runs with no external service.
//!
//! | `type`      | dataset                                   | settings          | sequence     |
//! |-------------|-------------------------------------------|-------------------|--------------|
//! | `generator` | NYC taxi trips, some malformed ([`taxi`]) | [`TaxiConfig`]    | [`Trips`]    |
//! | `turbines`  | wind-turbine readings, event time ([`turbines`]) | [`TurbineConfig`] | [`Readings`] |
//! | `clicks`    | web-analytics clicks, sessions ([`clicks`]) | [`ClickConfig`] | [`Clicks`]   |
//!
//! One name per concept: a *dataset* is what a config describes
//! ([`Dataset`]), its *sequence* the records it makes ([`Sequence`]), and
//! [`Synthetic`] the one source that serves any of them, paced to the
//! dataset's rate. [`records`] gives a dataset's records without a source,
//! to compute expected output in tests. (The `type = "generator"` name of
//! the taxi source predates the others and stays, for users' files.)
//!
//! Adding a dataset: a module with its config (implementing [`Dataset`])
//! and its sequence, and one line in [`register`].

use std::marker::PhantomData;

use sluice_config::{ConfigError, Entry, Pipeline, SourceSpec};
use sluice_types::{ConnectorError, Source};

use crate::registry::{parse_settings, Registry, SourceContext, SourceType};

mod checks;
pub mod clicks;
mod delivery;
mod draw;
mod pacer;
mod synthetic;
pub mod taxi;
pub mod turbines;

pub use clicks::{ClickConfig, Clicks};
pub use synthetic::{records, Dataset, Sequence, Synthetic};
pub use taxi::{TaxiConfig, Trips};
pub use turbines::{Readings, TurbineConfig};

/// Register the synthetic source types.
pub fn register(registry: &mut Registry) {
    registry.add_source(Datagen::<TaxiConfig>::new());
    registry.add_source(Datagen::<TurbineConfig>::new());
    registry.add_source(Datagen::<ClickConfig>::new());
}

/// The source type of dataset `D`.
struct Datagen<D>(PhantomData<fn() -> D>);

impl<D> Datagen<D> {
    fn new() -> Self {
        Datagen(PhantomData)
    }
}

impl<D: Dataset> SourceType for Datagen<D> {
    fn name(&self) -> &'static str {
        D::TYPE
    }

    fn check(&self, entry: &mut Entry<'_>) -> Result<(), ConfigError> {
        let config: D = entry.parse()?;
        entry.check(config.validate())
    }

    fn describe(&self, _: &SourceSpec, _: &Pipeline) -> Result<String, ConnectorError> {
        Ok(D::DESCRIPTION.to_string())
    }

    fn build(&self, at: &SourceContext<'_>) -> Result<Box<dyn Source>, ConnectorError> {
        let config: D = parse_settings(&format!("source `{}`", at.spec.name), &at.spec.settings)?;
        Ok(Box::new(Synthetic::new(&config, at.index)?))
    }
}
