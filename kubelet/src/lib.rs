//! oxlet's kubelet: registers a Node, renews its Lease and runs the pods bound to it through CRI.
//!
//! Built in the kubelet issue; the foundation provides the crate and its error type.

pub mod error;

pub use error::{Error, Result};
