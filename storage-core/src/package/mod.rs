//! The package engine: everything a version of a tree is made of and how it moves.
//!
//! - `tar_stream`: the deterministic tar stream of a tree and where each entry lands in it;
//! - `cuts`: that stream cut into content-defined frames, each compressed on its own;
//! - `known_frames`: the previous version's frames a put names without reading their files;
//! - `manifest`: the per-version record of entries and frames, and HEAD;
//! - `frame_cache`: the agent's cache of verified frames, and the one frame check;
//! - `manifest_cache`: the agent's cache of the manifests of versions it got;
//! - `tree_cache`: the agent's copies of versions it got, which warm gets copy from;
//! - `partial`: the entries and frames of a `get --only`, and the reader that keeps them;
//! - `large_files`: a get of large files, their ranges read at once and written by position;
//! - `packs`: format 3, frames stored together in packs and read by coalesced ranges;
//! - `extract`: verified, safe unpacking of a stream of frames into a staging folder;
//! - `destination`: the staging folder beside DEST and the atomic swap into it;
//! - `store`: the small trait a storage backend implements to hold packages;
//! - `engine`: put and get, end to end, over any such store;
//! - `trust`: what signing adds to both (signed manifests and HEADs, checks, rollback).

pub mod cuts;
pub mod destination;
pub mod engine;
pub mod extract;
pub mod frame_cache;
pub mod known_frames;
pub mod large_files;
pub mod manifest;
pub mod manifest_cache;
pub mod packs;
pub mod partial;
pub mod placed;
pub mod store;
pub mod tar_stream;
pub mod tree_cache;
mod trust;

pub use engine::PackageEngine;
pub use store::PackageStore;
