//! The one way to run a node: [`start`] binds the listener, starts the node
//! (storage, ZooKeeper, adoption, Raft, its background loops) and serves its
//! HTTP API and peer RPC on the bounded listener (`serve.rs`: connection cap,
//! timeouts, TLS when configured). `walship node` (main.rs), the examples and
//! the in-process tests all call it, so an embedder's node is served exactly
//! as the binary's is.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::Application;
use crate::config::NodeConfig;
use crate::events::Events;
use crate::node::Node;
use crate::node::StartError;

/// A node being served. Dropping it does not stop the node: call
/// [`RunningNode::shutdown`].
pub struct RunningNode {
    /// The node: its Raft, state machine, events and metrics.
    pub node: Arc<Node>,
    /// The address the listener is bound to (`--listen`, with the port the
    /// system chose if it asked for port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

/// Binds `cfg.listen`, starts the node with `app` (`None`: the key-value
/// store) reporting to `events`, and serves it. Returns once the node
/// serves; it then leads or follows on its own.
pub async fn start(
    cfg: NodeConfig,
    app: Option<Box<dyn Application>>,
    events: Events,
) -> Result<RunningNode, StartError> {
    let cannot_listen = |source| StartError::Listen {
        addr: cfg.listen.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(cannot_listen)?;
    let addr = listener.local_addr().map_err(cannot_listen)?;
    // Port 0 asks the system for one: the node registers the port it got.
    let mut cfg = cfg;
    cfg.listen = addr.to_string();
    let node = Node::start_with(cfg, app, events).await?;
    node.run_background().await?;
    tracing::info!(listen = %addr, tls = node.server_tls().is_some(), "serving");
    let router = crate::api::routes(Arc::clone(&node));
    let tls = node.server_tls().map(|config| crate::serve::ServerTls {
        config: Arc::clone(config),
        cluster: node.cfg().cluster.clone(),
    });
    let limits = crate::serve::Limits::of(node.cfg());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve::serve(listener, router, limits, tls, async {
        let _ = stopped.await;
    }));
    Ok(RunningNode {
        node,
        addr,
        stop: Some(stop),
        server,
    })
}

impl StartError {
    /// Whether starting again later with the same configuration and data
    /// may succeed: ZooKeeper unreachable, slow or busy, Raft restarting, a
    /// wait that timed out, or the listen address in use. Not for bad
    /// configuration, unreadable or foreign local data, ZooKeeper refusing
    /// this node's credentials or certificate, or W's data being corrupt:
    /// those need an operator.
    pub fn is_retryable(&self) -> bool {
        use crate::witness::WitnessError as W;
        use walship_zk::ZkError as Z;
        match self {
            StartError::Witness(W::Zk(Z::Unreachable(_) | Z::Timeout { .. })) => true,
            StartError::Witness(W::VersionMismatch | W::Busy) => true,
            StartError::RaftRestarting | StartError::Wait { .. } => true,
            StartError::Listen { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            _ => false,
        }
    }
}

impl RunningNode {
    /// Resolves when the node asks to stop by itself: its Raft core failed
    /// (see `Node::fatal`) or a peer asked it to leave.
    pub async fn stop_requested(&self) {
        self.node.stop_requested().await
    }

    /// Serves until SIGTERM, Ctrl-C or the node's own stop request (a panic
    /// in `apply`, say), then shuts down (see [`RunningNode::shutdown`]):
    /// what `walship node` and a program embedding walship do with a node.
    /// An error says why the node had failed.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = self.stop_requested() => {}
        }
        match self.shutdown().await {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => Ok(()),
        }
    }

    /// Stops serving (the listener closes, requests in flight finish), then
    /// shuts the node down: hands over if it leads, closes its ZooKeeper
    /// session and its log. Returns why the node had failed, if it had.
    pub async fn shutdown(mut self) -> Option<String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "the HTTP server task failed"),
        }
        tracing::info!("stopping: handing over if leading, then closing the ZooKeeper session");
        self.node.shutdown().await;
        self.node.fatal().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_causes_are_retryable_and_the_rest_are_not() {
        use crate::witness::WitnessError;
        use walship_zk::ZkError;
        let listen = |kind| StartError::Listen {
            addr: "127.0.0.1:8081".into(),
            source: std::io::Error::from(kind),
        };
        assert!(listen(std::io::ErrorKind::AddrInUse).is_retryable());
        assert!(!listen(std::io::ErrorKind::PermissionDenied).is_retryable());
        assert!(StartError::Witness(WitnessError::Zk(ZkError::Unreachable("no server".into()))).is_retryable());
        assert!(StartError::Witness(WitnessError::Busy).is_retryable());
        assert!(StartError::RaftRestarting.is_retryable());
        assert!(!StartError::Witness(WitnessError::Zk(ZkError::Refused("bad credentials".into()))).is_retryable());
        assert!(!StartError::Witness(WitnessError::corrupt("/walship/c/record", "bad crc")).is_retryable());
        assert!(!StartError::Config("invalid setting".into()).is_retryable());
    }
}
