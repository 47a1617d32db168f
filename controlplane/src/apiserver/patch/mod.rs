//! Placeholder: filled by the patch work.
