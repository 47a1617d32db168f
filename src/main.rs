//! The `oxlet` binary: one CLI for the kubelet, the proxy, the bundled control plane and tools.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// A Kubernetes node in Rust: kubelet, service proxy and a small bundled control plane.
#[derive(Debug, Parser)]
#[command(name = "oxlet", version = cmd::version::VERSION, about, long_about = None)]
struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled control plane (API server, store, scheduler, controllers).
    Server(cmd::server::Args),
    /// Run the kubelet against any API server.
    Kubelet(cmd::kubelet::Args),
    /// Run the service proxy (nftables or iptables) against any API server.
    Proxy(cmd::proxy::Args),
    /// Run the node half: a managed containerd, the kubelet and the proxy.
    Agent(cmd::agent::Args),
    /// Run a one-node cluster: server + agent in one supervised process tree.
    Standalone(cmd::standalone::Args),
    /// Manage images in containerd's k8s.io namespace.
    Images(cmd::images::Args),
    /// Inspect and debug pods and containers through CRI, like crictl.
    Crictl(cmd::crictl::Args),
    /// Print the version, git commit and targeted Kubernetes API version.
    Version(cmd::version::Args),
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("oxlet: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => cmd::server::run(args).await,
            Command::Kubelet(args) => cmd::kubelet::run(args).await,
            Command::Proxy(args) => cmd::proxy::run(args).await,
            Command::Agent(args) => cmd::agent::run(args).await,
            Command::Standalone(args) => cmd::standalone::run(args).await,
            Command::Images(args) => cmd::images::run(args).await,
            Command::Crictl(args) => cmd::crictl::run(args).await,
            Command::Version(args) => cmd::version::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("oxlet: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text the previous message already carries
/// (library errors quote their source, e.g. containerd's message in a CRI error).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut prev = String::new();
    for cause in err.chain() {
        let msg = cause.to_string();
        if !prev.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
        prev = msg;
    }
    out
}
