//! A fault-injecting TCP proxy for tests and the soak tool: it forwards every
//! connection it accepts to one upstream address until told to `cut`, which
//! makes the link fail the way a network partition does, and `heal`, which
//! lets traffic through again. Put one in front of each node (the node
//! advertises the proxy's address, so its peer reaches it only through the
//! proxy) and cutting both proxies really separates the two nodes while each
//! still reaches ZooKeeper.
//!
//! ```ignore
//! let proxy = FaultProxy::start("127.0.0.1:0".parse()?, node_listen_addr).await?;
//! // start the node with --advertise <proxy.addr()>
//! proxy.cut(CutMode::Blackhole); // peers time out
//! proxy.heal();                  // new connections are forwarded again
//! ```
//!
//! Tokio only; runs on the runtime that called `start`. Dropping the proxy
//! closes its listener and every connection it holds.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::ReadHalf;
use tokio::net::tcp::WriteHalf;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a cut link fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Connections open at the cut are closed at once; new ones are accepted
    /// and closed immediately. Peers see resets and EOFs straight away (like
    /// a dead process or a firewall that rejects).
    Refuse,
    /// Connections open at the cut stay open but nothing more is forwarded
    /// either way; new ones are accepted and never forwarded. Peers see
    /// timeouts, like a real partition that drops packets. On `heal` (or a
    /// later `cut(Refuse)`) the frozen connections are closed: by then their
    /// peers have given up on them, as they would have after a real
    /// partition of that length.
    Blackhole,
}

/// The proxy's link state, as every connection task sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Open,
    /// `hold`: nothing is forwarded, nothing is closed; on `heal` what
    /// waited is delivered, in order (a long delay, not a loss).
    Held,
    Cut(CutMode),
    /// The proxy was dropped: everything closes.
    Closed,
}

/// Counters since `start`. Bytes count what was actually written to the
/// other side, so nothing is counted while a link is cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (forwarded or not).
    pub connections: u64,
    /// Connections accepted while cut (closed or blackholed, never forwarded).
    pub cut_connections: u64,
    /// Connections dropped or frozen by a `cut` while they were forwarding.
    pub interrupted: u64,
    /// Bytes forwarded from clients to the upstream.
    pub bytes_to_upstream: u64,
    /// Bytes forwarded from the upstream back to clients.
    pub bytes_from_upstream: u64,
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections ({} while cut, {} interrupted), {} B up, {} B down",
            self.connections, self.cut_connections, self.interrupted, self.bytes_to_upstream, self.bytes_from_upstream
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    cut_connections: AtomicU64,
    interrupted: AtomicU64,
    bytes_to_upstream: AtomicU64,
    bytes_from_upstream: AtomicU64,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    state: watch::Sender<LinkState>,
    counters: Counters,
}

/// One listening address forwarding to one upstream address. See the module
/// docs. All methods are cheap and synchronous; they take effect on every
/// connection at once.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FaultProxy({} -> {}, {:?})",
            self.addr,
            self.upstream(),
            *self.shared.state.borrow()
        )
    }
}

impl FaultProxy {
    /// Listens on `listen` (port 0 picks a free port; see `addr`) and
    /// forwards to `upstream`, which need not be up yet: a connection that
    /// cannot reach it is closed. Starts healed.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (state, _) = watch::channel(LinkState::Open);
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            state,
            counters: Counters::default(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FaultProxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients (the other node) connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        *self.shared.upstream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forward new connections to `upstream` from now on (a node restarted on
    /// another port). Connections already forwarding keep their upstream.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap_or_else(|e| e.into_inner()) = upstream;
    }

    /// Cuts the link: every open connection is closed (`Refuse`) or frozen
    /// (`Blackhole`) at once, and so is every new one until `heal`. Cutting
    /// again with the other mode switches modes.
    pub fn cut(&self, mode: CutMode) {
        self.shared.state.send_replace(LinkState::Cut(mode));
    }

    /// Delays the link without breaking it: open connections stay open and
    /// new ones are accepted, but no byte is forwarded either way until
    /// `heal`, which delivers everything that waited, in order. What a
    /// stalled switch or a paused VM does to a TCP stream: requests sent
    /// meanwhile arrive late, after other clients' requests.
    pub fn hold(&self) {
        self.shared.state.send_replace(LinkState::Held);
    }

    /// Forwards new connections again and closes those frozen by a
    /// blackhole; a `hold` ends and what it delayed is delivered.
    pub fn heal(&self) {
        self.shared.state.send_replace(LinkState::Open);
    }

    /// `Some(mode)` while cut.
    pub fn cut_mode(&self) -> Option<CutMode> {
        match *self.shared.state.borrow() {
            LinkState::Cut(mode) => Some(mode),
            LinkState::Open | LinkState::Held | LinkState::Closed => None,
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            cut_connections: c.cut_connections.load(Ordering::Relaxed),
            interrupted: c.interrupted.load(Ordering::Relaxed),
            bytes_to_upstream: c.bytes_to_upstream.load(Ordering::Relaxed),
            bytes_from_upstream: c.bytes_from_upstream.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.shared.state.send_replace(LinkState::Closed);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                tokio::spawn(handle(client, Arc::clone(&shared)));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "fault proxy: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One accepted connection, for its whole life.
async fn handle(client: TcpStream, shared: Arc<Shared>) {
    let mut state = shared.state.subscribe();
    let now = *state.borrow_and_update();
    match now {
        LinkState::Open | LinkState::Held => {}
        LinkState::Cut(mode) => {
            shared.counters.cut_connections.fetch_add(1, Ordering::Relaxed);
            if mode == CutMode::Blackhole {
                hold_until_change(&mut state, LinkState::Cut(CutMode::Blackhole)).await;
            }
            return; // dropping `client` closes it
        }
        LinkState::Closed => return,
    }
    let upstream_addr = *shared.upstream.lock().unwrap_or_else(|e| e.into_inner());
    let upstream = tokio::select! {
        r = TcpStream::connect(upstream_addr) => match r {
            Ok(s) => s,
            Err(_) => return, // as if the upstream refused the client
        },
        _ = wait_not_open(&mut state) => return,
    };
    let mut client = client;
    let mut upstream = upstream;
    let _ = upstream.set_nodelay(true);
    let c = &shared.counters;
    {
        // Borrowed halves: dropping the pipes stops the copying but leaves
        // both sockets open, which is what a blackhole needs.
        let (client_r, client_w) = client.split();
        let (up_r, up_w) = upstream.split();
        let forward = async {
            tokio::join!(
                pipe(client_r, up_w, &shared.state, &c.bytes_to_upstream),
                pipe(up_r, client_w, &shared.state, &c.bytes_from_upstream),
            )
        };
        tokio::select! {
            _ = forward => return, // both directions ended by themselves
            _ = wait_not_open(&mut state) => {}
        }
    }
    c.interrupted.fetch_add(1, Ordering::Relaxed);
    let now = *state.borrow_and_update();
    if now == LinkState::Cut(CutMode::Blackhole) {
        hold_until_change(&mut state, now).await;
    }
    // Dropping `client` and `upstream` closes both.
}

/// Copies `from` to `to` until EOF or an error, counting bytes written. Half
/// close: EOF from one side shuts down writing to the other. Checks the link
/// before every write, so nothing read after `cut` returned is forwarded
/// (it then waits forever; the caller drops it).
async fn pipe(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, state: &watch::Sender<LinkState>, bytes: &AtomicU64) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if *state.borrow() == LinkState::Held {
                    let mut held = state.subscribe();
                    let _ = held.wait_for(|s| *s != LinkState::Held).await;
                }
                if *state.borrow() != LinkState::Open {
                    return std::future::pending().await;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// Resolves with the new state as soon as the link is cut or closed (a
/// hold only delays it).
async fn wait_not_open(state: &mut watch::Receiver<LinkState>) -> LinkState {
    match state
        .wait_for(|s| !matches!(s, LinkState::Open | LinkState::Held))
        .await
    {
        Ok(s) => *s,
        Err(_) => LinkState::Closed,
    }
}

/// Returns once the link leaves `from`.
async fn hold_until_change(state: &mut watch::Receiver<LinkState>, from: LinkState) {
    let _ = state.wait_for(|s| *s != from).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("echo addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy_to_echo() -> FaultProxy {
        let upstream = echo_server().await;
        FaultProxy::start("127.0.0.1:0".parse().expect("addr"), upstream)
            .await
            .expect("start proxy")
    }

    /// Sends `msg` and reads the echo, or says why not within 300 ms.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Result<Vec<u8>, String> {
        s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; msg.len()];
        match tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await {
            Err(_) => Err("timeout".into()),
            Ok(Err(e)) => Err(format!("read: {e}")),
            Ok(Ok(_)) => Ok(buf),
        }
    }

    #[tokio::test]
    async fn forwards_and_counts() {
        let p = proxy_to_echo().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, b"hello").await.as_deref(), Ok(&b"hello"[..]));
        let st = p.stats();
        assert_eq!(
            (st.connections, st.bytes_to_upstream, st.bytes_from_upstream),
            (1, 5, 5),
            "{st}"
        );
    }

    #[tokio::test]
    async fn refuse_closes_open_and_new_connections_then_heal_forwards() {
        let p = proxy_to_echo().await;
        let mut open = TcpStream::connect(p.addr()).await.expect("connect");
        round_trip(&mut open, b"x").await.expect("before the cut");
        p.cut(CutMode::Refuse);
        assert_eq!(p.cut_mode(), Some(CutMode::Refuse));
        let e = round_trip(&mut open, b"y")
            .await
            .expect_err("an open connection must be cut");
        assert_ne!(e, "timeout", "refuse must close, not stall");
        let mut new = TcpStream::connect(p.addr()).await.expect("accepted even when cut");
        let e = round_trip(&mut new, b"z")
            .await
            .expect_err("a new connection must be refused");
        assert_ne!(e, "timeout", "refuse must close, not stall");
        p.heal();
        let mut after = TcpStream::connect(p.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut after, b"ok").await.as_deref(), Ok(&b"ok"[..]));
        let st = p.stats();
        assert_eq!((st.connections, st.cut_connections, st.interrupted), (3, 1, 1), "{st}");
    }

    #[tokio::test]
    async fn blackhole_stalls_open_and_new_connections_then_heal_closes_them() {
        let p = proxy_to_echo().await;
        let mut open = TcpStream::connect(p.addr()).await.expect("connect");
        round_trip(&mut open, b"x").await.expect("before the cut");
        p.cut(CutMode::Blackhole);
        let before = p.stats();
        assert_eq!(round_trip(&mut open, b"y").await, Err("timeout".into()));
        let mut new = TcpStream::connect(p.addr()).await.expect("accepted even when cut");
        assert_eq!(round_trip(&mut new, b"z").await, Err("timeout".into()));
        assert_eq!(
            p.stats().bytes_to_upstream,
            before.bytes_to_upstream,
            "nothing forwarded"
        );
        p.heal();
        // The frozen connections are closed on heal: EOF, not a late echo.
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf))
            .await
            .expect("closed on heal")
            .unwrap_or(0);
        assert_eq!(n, 0, "a blackholed connection must not deliver after heal");
        let mut after = TcpStream::connect(p.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut after, b"ok").await.as_deref(), Ok(&b"ok"[..]));
    }

    #[tokio::test]
    async fn dropping_the_proxy_closes_everything() {
        let p = proxy_to_echo().await;
        let addr = p.addr();
        let mut open = TcpStream::connect(addr).await.expect("connect");
        round_trip(&mut open, b"x").await.expect("forwarding");
        drop(p);
        let e = round_trip(&mut open, b"y").await.expect_err("closed with the proxy");
        assert_ne!(e, "timeout");
    }
}
