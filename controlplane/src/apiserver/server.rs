//! Placeholder: filled by the server/PKI/auth work.
