//! iptables rendering: `iptables-restore --noflush` text for our own chains.

mod render;

pub use render::{render, IptablesChains, IptablesRules, JUMPS};
