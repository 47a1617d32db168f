//! Deletes stale UDP conntrack entries with the `conntrack` tool (conntrack-tools).

use super::Command;
use crate::conntrack::{family_arg, parse_entries, stale, Entry, Stale};
use crate::error::{Error, Result};
use crate::model::{Family, Model};

/// The conntrack cleaner.
#[derive(Debug, Clone, Default)]
pub struct Conntrack {
    cmd: Command,
}

impl Conntrack {
    /// A cleaner running `conntrack` through `cmd`.
    pub fn new(cmd: Command) -> Self {
        Self { cmd }
    }

    /// The UDP entries of `family`.
    pub async fn list_udp(&self, family: Family) -> Result<Vec<Entry>> {
        let out = self
            .cmd
            .output(
                "conntrack",
                &["-L", "-p", "udp", "-f", family_arg(family)],
                None,
            )
            .await?;
        Ok(parse_entries(&out))
    }

    /// Runs one deletion. conntrack exits 1 when nothing matched (the flow ended meanwhile):
    /// that is not an error.
    pub async fn delete(&self, family: Family, entry: &Stale) -> Result<()> {
        let args = entry.delete_args(family);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match self.cmd.output("conntrack", &args, None).await {
            Ok(_) => Ok(()),
            Err(Error::CommandFailed { stderr, .. })
                if stderr.contains("0 flow entries have been deleted") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes every UDP flow of `family` that a service of `model` no longer sends where
    /// it goes (see [`crate::conntrack::stale`]); returns how many deletions ran.
    pub async fn clean_stale(&self, model: &Model, family: Family) -> Result<usize> {
        let entries = self.list_udp(family).await?;
        let stale = stale(model, family, &entries);
        for s in &stale {
            self.delete(family, s).await?;
        }
        Ok(stale.len())
    }
}
