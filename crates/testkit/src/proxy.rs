//! A TCP proxy a test can cut, stall and restore: a stand-in for a dependency
//! that goes down, or hangs, and comes back, without touching the shared
//! services.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward bytes both ways.
    Up,
    /// Close every connection, refuse new ones: a stopped server.
    Cut,
    /// Keep connections open but forward nothing: a hung server or a network
    /// partition, the case only timeouts can handle.
    Stalled,
}

/// Forwards connections to a target, until told otherwise.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on 127.0.0.1 with a free port.
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (mode, _) = watch::channel(Mode::Up);
        let mode = Arc::new(mode);
        let state = Arc::clone(&mode);
        let accept_loop = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut changes = state.subscribe();
                let now = *changes.borrow_and_update();
                match now {
                    Mode::Cut => drop(inbound),
                    Mode::Stalled => {
                        // Hold the socket silently until the mode changes.
                        tokio::spawn(async move {
                            let _ = changes.changed().await;
                            drop(inbound);
                        });
                    }
                    Mode::Up => {
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                                _ = changes.wait_for(|m| *m != Mode::Up) => {}
                            }
                            // Stalled: keep both ends open and silent until the
                            // mode changes again, then close.
                            if *changes.borrow() == Mode::Stalled {
                                let _ = changes.changed().await;
                            }
                        });
                    }
                }
            }
        });
        Self {
            addr,
            mode,
            accept_loop,
        }
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dependency stops: open connections are closed, new ones refused.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// The dependency hangs: connections stay open but nothing is answered.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stalled);
    }

    /// The dependency comes back (connections held by a stall are closed).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Up);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_loop.abort();
    }
}

/// The address a `host:port` URL points at, resolved for the proxy target.
///
/// # Panics
/// When the URL has no resolvable host and port.
pub fn target_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("valid URL");
    let host = parsed.host_str().expect("URL has a host");
    let port = parsed
        .port_or_known_default()
        .unwrap_or(match parsed.scheme() {
            "redis" => 6379,
            _ => 5432,
        });
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .expect("resolvable host")
        .next()
        .expect("at least one address")
}
