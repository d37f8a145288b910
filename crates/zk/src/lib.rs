//! walship's ZooKeeper session: the layer under the witness (W) and the
//! node directory, and the only code of walship that talks to ZooKeeper's
//! client library directly about connections.
//!
//! - [`ZkSession`]: one session per node for the life of the process.
//!   Every call is bounded by a timeout ([`ZkSession::run`]), so a ZooKeeper
//!   that does not answer is an error, never a hang. A disconnected client
//!   races a new session on whichever server serves first; an expired one
//!   is replaced; registered ephemeral znodes ([`ZkSession::register_ephemeral`])
//!   are re-created on every new session, and [`ZkSession::generation`]
//!   tells watch loops to re-arm.
//! - [`ZkSecurity`]: the credentials (digest or SASL) and TLS a session
//!   uses, as already-loaded material; reading it from a node's settings is
//!   the embedder's part.
//! - [`ZkError`]: what a connect or a call fails with.
//! - [`SessionMetrics`]: what a session reports (call latencies, failures
//!   by kind, sessions replaced) to metrics the embedder keeps.
//! - [`four_letter`], [`four_letter_tls`], [`ServerMode`]: ZooKeeper's
//!   four-letter words, which the keeper's probes and the test harness use.
//!
//! It knows nothing of Raft or of walship's records: the znodes' paths and
//! payloads are the caller's (`Claim::ReplaceLowerTerm` reads a term out of
//! a payload through a function the caller passes).

mod error;
mod metrics;
mod security;
mod session;

pub use error::ZkError;
pub use metrics::SessionMetrics;
pub use security::four_letter_tls;
pub use security::ZkCredentials;
pub use security::ZkSecurity;
pub use security::ZkTls;
pub use security::ZkTlsFiles;
pub use security::SASL_ACL;
pub use security::ZK_SASL_USER;
pub use session::connection_timeout;
pub use session::four_letter;
pub use session::next_look;
pub use session::split_connect_string_as_written;
pub use session::Claim;
pub use session::ServerMode;
pub use session::ZkSession;
