//! The only part of the crate that touches the kernel: runs `nft` and `iptables-restore`.

pub mod iptables;
pub mod nft;
mod run;

pub use run::Command;
