//! Placeholder: Status bodies.
