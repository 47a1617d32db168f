//! One module per subcommand (youki's layout): parsing stays in `main.rs`, work lives here.

pub mod crictl;
pub mod images;
pub mod pending;
pub mod proxy;
pub mod kubelet;
pub mod server;
pub mod signals;
pub mod version;
