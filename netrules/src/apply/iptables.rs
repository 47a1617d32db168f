//! Applies iptables rules with `iptables-restore --noflush` and keeps our jump rules in the
//! built-in chains.

use super::Command;
use crate::error::{Error, Result};
use crate::iptables::{IptablesChains, IptablesRules, JUMPS};
use crate::model::Family;
use crate::names::is_ipt_service_chain;

/// The iptables applier for one family.
#[derive(Debug, Clone)]
pub struct Iptables {
    cmd: Command,
    family: Family,
}

impl Iptables {
    /// An applier for `family` running the tools through `cmd`.
    pub fn new(cmd: Command, family: Family) -> Self {
        Self { cmd, family }
    }

    fn tool(&self, base: &str) -> String {
        match self.family {
            Family::V4 => base.to_owned(),
            Family::V6 => base.replacen("iptables", "ip6tables", 1),
        }
    }

    /// Writes `rules` (deleting chains of `previous` no longer used), then makes sure the
    /// built-in chains jump to ours.
    pub async fn apply(
        &self,
        rules: &IptablesRules,
        previous: Option<&IptablesRules>,
    ) -> Result<()> {
        self.apply_after(rules, previous.map(IptablesRules::chain_names).as_ref())
            .await
    }

    /// [`Iptables::apply`] knowing only the chain names of the previous rules.
    pub async fn apply_after(
        &self,
        rules: &IptablesRules,
        previous: Option<&IptablesChains>,
    ) -> Result<()> {
        let text = rules.to_restore_after(previous);
        tracing::trace!(text, "iptables-restore input");
        self.cmd
            .output(
                &self.tool("iptables-restore"),
                &["--noflush", "--wait"],
                Some(&text),
            )
            .await?;
        self.ensure_jumps().await
    }

    /// Inserts each jump of [`JUMPS`] at the top of its built-in chain unless present.
    pub async fn ensure_jumps(&self) -> Result<()> {
        let iptables = self.tool("iptables");
        for (table, chain, matches, target) in JUMPS {
            let rule = jump_args(matches, target);
            let mut check = vec!["-w", "-t", table, "-C", chain];
            check.extend(rule.iter().map(String::as_str));
            match self.cmd.output(&iptables, &check, None).await {
                Ok(_) => continue,
                Err(Error::CommandFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            let mut insert = vec!["-w", "-t", table, "-I", chain, "1"];
            insert.extend(rule.iter().map(String::as_str));
            self.cmd.output(&iptables, &insert, None).await?;
        }
        Ok(())
    }

    /// Removes our jumps and every `OXLET-` chain from the filter and nat tables.
    pub async fn cleanup(&self) -> Result<()> {
        let iptables = self.tool("iptables");
        for (table, chain, matches, target) in JUMPS {
            let rule = jump_args(matches, target);
            loop {
                let mut delete = vec!["-w", "-t", table, "-D", chain];
                delete.extend(rule.iter().map(String::as_str));
                match self.cmd.output(&iptables, &delete, None).await {
                    Ok(_) => continue,
                    // "Bad rule (does a matching rule exist in that chain?)": none left, or
                    // our chain is already gone.
                    Err(Error::CommandFailed { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut text = String::new();
        for table in ["filter", "nat"] {
            let saved = self
                .cmd
                .output(&self.tool("iptables-save"), &["-t", table], None)
                .await?;
            let ours: Vec<&str> = saved
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| c.starts_with("OXLET-") || is_ipt_service_chain(c))
                .collect();
            text.push_str(&format!("*{table}\n"));
            for c in &ours {
                text.push_str(&format!(":{c} - [0:0]\n"));
            }
            for c in &ours {
                text.push_str(&format!("-X {c}\n"));
            }
            text.push_str("COMMIT\n");
        }
        self.cmd
            .output(
                &self.tool("iptables-restore"),
                &["--noflush", "--wait"],
                Some(&text),
            )
            .await
            .map(drop)
    }
}

fn jump_args(matches: &str, target: &str) -> Vec<String> {
    let mut v: Vec<String> = matches.split_whitespace().map(str::to_owned).collect();
    v.extend(["-j".to_owned(), target.to_owned()]);
    v
}
