//! CRI v1 client for containerd over a unix socket, an in-memory fake, and image import.

pub mod error;

pub use error::{Error, Result};
