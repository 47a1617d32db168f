//! The registry: generic storage of Kubernetes objects with per-resource strategies.

pub mod admission_serviceaccount;
pub mod allocator;
pub mod conversion;
pub mod generic;
pub mod strategies;
pub mod strategy;
pub mod validation;
