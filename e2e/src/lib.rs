//! oxlet's test harness: network namespaces, private containerd, local registries and images.

pub mod containerd;
pub mod netns;
