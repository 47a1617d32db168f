//! A pure model of service load-balancing rendered into nftables and iptables-restore text.
//!
//! [`model`] is the plain input (no Kubernetes types), [`nft`] and [`iptables`] are pure,
//! deterministic renderers, and only [`apply`] (feature `apply`) touches the kernel.

#[cfg(feature = "apply")]
pub mod apply;
pub mod conntrack;
pub mod error;
pub mod iptables;
pub mod model;
pub mod names;
pub mod nft;

pub use error::{Error, Result};
pub use model::{Cidr, Endpoint, Family, Model, Protocol, ServicePort, ServicePortName};
