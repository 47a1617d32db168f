//! The API server: Kubernetes REST semantics over a revisioned store, served over HTTPS.

pub mod auth;
pub mod discovery;
pub mod handlers;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod resources;
pub mod selectors;
pub mod server;
pub mod status;
pub mod table;
