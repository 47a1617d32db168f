//! Applies nft transactions with `nft -f -` (one atomic kernel transaction per script).

use super::Command;
use crate::error::Result;
use crate::model::Family;
use crate::nft::{Transaction, TABLE};

/// The nft applier.
#[derive(Debug, Clone, Default)]
pub struct Nft {
    cmd: Command,
}

impl Nft {
    /// An applier running `nft` through `cmd`.
    pub fn new(cmd: Command) -> Self {
        Self { cmd }
    }

    /// Pipes `script` to `nft -f -`; nft applies it all or nothing.
    pub async fn run_script(&self, script: &str) -> Result<()> {
        tracing::trace!(script, "nft script");
        self.cmd
            .output("nft", &["-f", "-"], Some(script))
            .await
            .map(drop)
    }

    /// Applies `tx`; an empty transaction runs nothing.
    pub async fn apply(&self, tx: &Transaction) -> Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        self.run_script(&tx.to_nft_script()).await
    }

    /// `nft list table <family> oxlet`, to compare with what we applied (tamper detection,
    /// see [`crate::nft::Ruleset::missing_from_listing`]).
    pub async fn list_table(&self, family: Family) -> Result<String> {
        self.cmd
            .output("nft", &["list", "table", family.nft(), TABLE], None)
            .await
    }

    /// Removes our tables in both families and nothing else (`add` first, so that a missing
    /// table is not an error).
    pub async fn cleanup(&self) -> Result<()> {
        let script = [Family::V4, Family::V6]
            .iter()
            .map(|f| format!("add table {0} {TABLE}\ndelete table {0} {TABLE}\n", f.nft()))
            .collect::<String>();
        self.run_script(&script).await
    }
}
