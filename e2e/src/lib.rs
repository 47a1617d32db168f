//! oxlet's test harness: network namespaces, private containerd, local registries and images.

pub mod containerd;
pub mod etcd;
pub mod images;
pub mod netns;
pub mod registry;
pub mod runtime_env;
pub mod server;
