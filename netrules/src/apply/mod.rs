//! The only part of the crate that touches the kernel: runs `nft`, `iptables-restore`,
//! `conntrack` and `sysctl`.

pub mod conntrack;
pub mod iptables;
pub mod nft;
mod run;

pub use run::Command;

/// Sets the sysctl `name` (dotted, e.g. `net.ipv4.conf.all.route_localnet`) to `value` in
/// `cmd`'s network namespace, unless it already has that value.
pub async fn set_sysctl(cmd: &Command, name: &str, value: &str) -> crate::error::Result<()> {
    let current = cmd.output("sysctl", &["-n", name], None).await?;
    if current.trim() == value {
        return Ok(());
    }
    cmd.output("sysctl", &["-qw", &format!("{name}={value}")], None)
        .await
        .map(drop)
}
