//! hoist: a GitOps pull-based deployer for Node.js apps on plain Linux servers.
//!
//! The library holds every stage of the pipeline; `main.rs` only parses the
//! command line and maps errors to exit codes. See docs/architecture.md.

pub mod artifact;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod fleet;
pub mod fsutil;
pub mod http;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod pace;
pub mod plan;
pub mod pm2;
pub mod producer;
pub mod progress;
pub mod redact;
pub mod release;
pub mod report;
pub mod rollout;
pub mod runs;
pub mod safe_fs;
pub mod secrets;
pub mod setup;
pub mod signature;
pub mod source;
pub mod state;
pub mod status;
