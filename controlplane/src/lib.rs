//! oxlet's bundled control plane: API server, storage, scheduler and controllers.
//!
//! Built in the control plane issues; the foundation provides the crate and its error type.

pub mod error;

pub use error::{Error, Result};
