//! Placeholder: REST handlers.
