//! The API server: Kubernetes REST semantics over a revisioned store, served over HTTPS.

pub mod auth;
pub mod bootstrap;
pub mod discovery;
pub mod handlers;
pub mod node_proxy;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod request;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod serviceaccount_token;
pub mod status;
pub mod subresources;
pub mod table;
pub mod watch;
