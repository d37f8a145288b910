//! Free loopback ports: bind 127.0.0.1:0, note the port, release it.
//!
//! A port is never handed out twice by one process, so parallel tests in the
//! same binary (and a tool's ZooKeeper servers, nodes and proxies) cannot
//! collide with each other. Another process can still take the port between
//! release and use; ZooKeeper and node start-up detect "address in use" and
//! retry on a new port.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that was free a moment ago and that this process has not
/// handed out before.
pub fn free_port() -> Result<u16> {
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let port = listener.local_addr().context("local_addr")?.port();
        drop(listener);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("no fresh free port on 127.0.0.1 after 1000 attempts")
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}
