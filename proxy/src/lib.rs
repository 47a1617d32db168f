//! oxlet's service proxy: watches Services, EndpointSlices and its Node and programs netrules.
//!
//! [`config`] decodes KubeProxyConfiguration, [`model`] turns store snapshots into the plain
//! netrules model, [`sync_runner`] debounces syncs, [`proxier`] applies them, and [`run()`]
//! wires reflectors, servers and the sync loop together.

pub mod config;
pub mod endpoints_change_tracker;
pub mod error;
pub mod healthz;
pub mod metrics;
pub mod model;
pub mod projection;
pub mod proxier;
pub mod run;
pub mod service_change_tracker;
pub mod service_health;
pub mod sync_runner;

pub use config::{Config, KubeProxyConfiguration, Overrides, ProxyMode};
pub use error::{Error, Result};
pub use run::{cleanup, run, run_with_registry};
