//! One module per subcommand (youki's layout): parsing stays in `main.rs`, work lives here.

pub mod agent;
pub mod crictl;
pub mod images;
pub mod kubelet;
pub mod prereq;
pub mod proxy;
pub mod server;
pub mod signals;
pub mod standalone;
pub mod version;
