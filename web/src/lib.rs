//! The HTTP server: the only crate that knows HTTP and JSON.
