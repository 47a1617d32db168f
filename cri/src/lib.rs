//! CRI v1 client for containerd over a unix socket, an in-memory fake, and image import.
//!
//! - [`RuntimeService`], [`ImageService`] and [`Runtime`]: the CRI services as object-safe traits.
//! - [`RemoteRuntime`]: their implementation over a unix socket (containerd, CRI-O).
//! - [`fake::FakeRuntime`] (feature `fake`): an in-memory runtime recording every call.
//! - [`import::import_archive`]: loads an OCI or `docker save` archive into containerd's
//!   `k8s.io` namespace through containerd's own API, and unpacks it, like k3s air-gap images.
//! - [`containerd_config::config_toml`]: the config of a private containerd under one directory.
//! - [`api`]: the generated CRI v1 messages, so callers need no direct `k8s-cri` dependency.

pub mod containerd_config;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod import;
pub mod remote;
pub mod runtime;

/// The generated CRI v1 (`runtime.v1`) messages and clients.
pub use k8s_cri::v1 as api;

pub use error::{Error, Result};
pub use import::{import_archive, ImportOptions, ImportedImage};
pub use remote::{RemoteRuntime, Timeouts, DEFAULT_ENDPOINT};
pub use runtime::{image_spec, ImageService, Runtime, RuntimeService};
