//! oxlet's kubelet: registers a Node, renews its Lease and posts its status; pods through CRI
//! come later.

pub mod config;
pub mod error;
pub mod node;

pub use config::KubeletConfiguration;
pub use error::{Error, Result};
pub use node::host::{HostCapacity, HostReader};
pub use node::lease::LeaseConfig;
pub use node::register::{register, NodeSpec};
pub use node::status::{compute_conditions, NodeHealth, StaticStatus, StatusConfig, StatusSource};
