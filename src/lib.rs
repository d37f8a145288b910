//! walship: a two-node key-value store replicated by Raft (openraft), with
//! ZooKeeper as a passive third voter that sits in every quorum.

pub mod types;
pub mod witness;
