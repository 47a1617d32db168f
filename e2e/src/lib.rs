//! oxlet's test harness: network namespaces, private containerd, local registries and images.

pub mod containerd;
pub mod etcd;
pub mod forward;
pub mod images;
pub mod netns;
pub mod netns_traffic;
pub mod node_env;
pub mod registry;
pub mod runtime_env;
pub mod server;
pub mod sim_node;
