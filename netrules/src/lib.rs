//! A pure model of service load-balancing rendered into nftables and iptables-restore text.
//!
//! Built in the service proxy issue; the foundation provides the crate and its error type.

pub mod error;

pub use error::{Error, Result};
