//! `walship soak`: the die-and-reborn soak (scenario S10 of witness-protocol.md).
//! This first slice holds the linearizability checker and the seeded RNG.

pub mod lincheck;
pub mod rng;
