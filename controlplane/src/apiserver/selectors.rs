//! Placeholder: filled by the selectors work.
