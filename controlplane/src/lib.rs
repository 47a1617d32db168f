//! oxlet's bundled control plane: API server, storage, scheduler and controllers.
//!
//! Built in the control plane issues; the foundation provides the crate and its error type.

pub mod apiserver;
pub mod controllers;
pub mod error;
pub mod registry;
pub mod storage;

pub use error::{Error, Result};
