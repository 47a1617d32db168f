//! Placeholder: filled by the strategies work.
