//! What a session's connect or call can fail with.

use zookeeper_client as zk;

#[derive(thiserror::Error, Debug)]
pub enum ZkError {
    /// No session (being replaced), the connection lost, or no server
    /// answered a connect; a write's outcome is unknown.
    #[error("ZooKeeper unreachable: {0}")]
    Unreachable(String),
    #[error("ZooKeeper did not answer {what} within {timeout_ms} ms (outcome unknown)")]
    Timeout { what: String, timeout_ms: u64 },
    /// ZooKeeper answered `what` with an error of its own (`NoNode`,
    /// `NodeExists`, `BadVersion`, ...).
    #[error("ZooKeeper {what}: {source}")]
    Call { what: String, source: zk::Error },
    /// ZooKeeper refused this node for a reason retrying cannot mend (its
    /// credentials, its TLS certificate, or ZooKeeper's certificate not from
    /// the configured CA); the message names the setting.
    #[error("{0}")]
    Refused(String),
    /// An ephemeral claimed with [`crate::Claim::ReplaceLowerTerm`] is held
    /// by another session at a term no lower than the claim's.
    #[error("{path} is held at term >= {term} by another session")]
    Held { path: String, term: u64 },
}

impl ZkError {
    /// `what` failed with `source`: a lost connection or session is
    /// `Unreachable`, anything else ZooKeeper's answer.
    pub fn from_zk(what: &str, source: zk::Error) -> ZkError {
        match source {
            zk::Error::ConnectionLoss | zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::NoHosts => {
                ZkError::Unreachable(format!("{what}: {source}"))
            }
            source => ZkError::Call {
                what: what.to_string(),
                source,
            },
        }
    }

    /// True when ZooKeeper answered with `code`.
    pub fn is_zk(&self, code: zk::Error) -> bool {
        matches!(self, ZkError::Call { source, .. } if *source == code)
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ZkError::Unreachable(_) => "unreachable",
            ZkError::Timeout { .. } => "timeout",
            ZkError::Call { .. } => "zookeeper",
            ZkError::Refused(_) => "refused",
            ZkError::Held { .. } => "held",
        }
    }

    /// True when a write may or may not have happened.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ZkError::Timeout { .. } | ZkError::Unreachable(_))
    }
}
