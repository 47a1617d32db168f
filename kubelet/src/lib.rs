//! oxlet's kubelet: registers a Node, renews its Lease, posts its status, and runs the pods
//! bound to it through CRI.

pub mod backoff;
pub mod cgroups;
pub mod cni;
pub mod config;
pub mod container;
pub mod error;
pub mod events;
pub mod fieldpath;
pub mod image_manager;
pub mod kubelet;
pub mod labels;
pub mod lifecycle;
pub mod node;
pub mod pod_actions;
pub mod pod_status;
pub mod pod_sync;
pub mod pod_workers;
pub mod prober;
pub mod runtime_state;
pub mod sandbox;
pub mod server;
pub mod static_pods;
pub mod volumes;

pub use config::KubeletConfiguration;
pub use error::{Error, Result};
pub use kubelet::{run, CniMode, KubeletOptions};
pub use node::host::{HostCapacity, HostReader};
pub use node::lease::LeaseConfig;
pub use node::register::{register, NodeSpec};
pub use node::status::{compute_conditions, NodeHealth, StaticStatus, StatusConfig, StatusSource};
