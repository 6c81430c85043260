//! hoist: a GitOps pull-based deployer for Node.js apps on plain Linux servers.
//!
//! The library holds every stage of the pipeline; `main.rs` only parses the
//! command line and maps errors to exit codes. See docs/architecture.md.

pub mod artifact;
