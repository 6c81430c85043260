//! The producer side: what runs in a project's CI or on a developer's
//! machine, never on a server. `pack` turns a build directory into the
//! reproducible `.tar.zst` the unpacker is built for, `publish` uploads it
//! and points a manifest at it, and `manifest_edit` changes a manifest's
//! `release` and `artifact` keys while keeping the rest of the file as the
//! user wrote it.
//!
//! Kept apart from the server-side stages so that the daemon's code map
//! stays "what a server does", and so nothing here is mistaken for a step of
//! a deploy.

pub mod manifest_edit;
mod pack;
pub mod publish;

pub use pack::pack;
