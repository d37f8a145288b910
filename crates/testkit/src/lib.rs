//! walship's test harness, shared by the integration tests (`tests/`), the
//! soak (`tools/soak`) and the bench (`tools/bench`): processes (a private
//! ZooKeeper or ensemble, `walship node`), free ports, four-letter words, and
//! a TCP fault proxy that cuts a link on demand. Of walship's crates it
//! depends only on walship-zk (four-letter words), which is below the
//! product, so the product's tests can use it without a cycle.

pub mod faultproxy;
pub mod procs;
