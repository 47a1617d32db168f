//! oxlet's service proxy: watches Services, EndpointSlices and its Node and programs netrules.
//!
//! Built in the service proxy issue; the foundation provides the crate and its error type.

pub mod error;

pub use error::{Error, Result};
