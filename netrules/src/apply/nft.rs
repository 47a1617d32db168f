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

    /// Pipes the commands `lines` yields (one per item, without newline) to `nft -f -` as
    /// one transaction, writing them as they come: a full sync of many services can be
    /// rendered service by service instead of as one large script.
    pub async fn run_lines<I>(&self, lines: I) -> Result<()>
    where
        I: Iterator<Item = String>,
    {
        let pieces = lines.map(|mut l| {
            l.push('\n');
            l
        });
        self.cmd
            .output_lines("nft", &["-f", "-"], Some(pieces))
            .await
            .map(drop)
    }

    /// Lists the chain names of our table in `family` (`nft list chains`), for tamper
    /// detection without the cost of listing every rule.
    pub async fn list_chain_names(&self, family: Family) -> Result<Vec<String>> {
        let out = self
            .cmd
            .output("nft", &["list", "chains", family.nft()], None)
            .await?;
        Ok(crate::nft::chains_in_listing(
            &out,
            &format!("{} {TABLE}", family.nft()),
        ))
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
