//! RepX runs experiments and builds as graphs of stages whose logic is WebAssembly.
//!
//! Data flows one way: [`lab`] (the lab file) → [`graph`] (jobs) → [`plan`] (resolved on
//! this host) → [`sched`] (order, caching) → [`wasm`] (the plugins) → [`store`] (outputs).
//! Only [`cli`] prints; everything below it reports events or returns typed errors.

pub mod bench;
pub mod cli;
pub mod contract;
pub mod file_stat;
pub mod graph;
pub mod lab;
pub mod nix;
pub mod plan;
pub mod sched;
pub mod sources;
pub mod store;
pub mod wasm;
