//! Placeholder: filled by the discovery/OpenAPI/table work.
