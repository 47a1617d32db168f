//! The only part of the crate that touches the kernel: runs `nft`, `iptables-restore` and
//! `conntrack`.

pub mod conntrack;
pub mod iptables;
pub mod nft;
mod run;

pub use run::Command;
