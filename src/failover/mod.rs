//! Failover: the rules that decide when a follower stands for election
//! (`rules`, pure and table-tested); `node/failover.rs` drives them.

pub mod rules;
