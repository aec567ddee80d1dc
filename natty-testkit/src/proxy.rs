//! A TCP proxy that can cut connections and add latency, for partition tests.
//!
//! Written on std threads rather than tokio so tests on any runtime (or none) can use it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::Error;

/// A loopback TCP proxy in front of one server.
///
/// Point the client at [`Proxy::url`]; [`Proxy::cut`] drops every connection and refuses new
/// ones until [`Proxy::restore`]. Dropping the proxy closes everything.
///
/// # Example
/// ```no_run
/// let server = natty_testkit::Server::start()?;
/// let proxy = natty_testkit::Proxy::start(server.addr())?;
/// // connect a client to proxy.url() ...
/// proxy.cut();
/// proxy.restore();
/// # Ok::<(), natty_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    closed: AtomicBool,
    latency_micros: AtomicU64,
    connections: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn close_all(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for stream in connections.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// Listen on a free loopback port and forward every connection to `target`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(target: SocketAddr) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("natty-testkit-proxy".into())
            .spawn(move || accept_loop(&listener, target, &accept_shared))?;
        Ok(Self { addr, shared })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://` URL of the proxy (use [`Proxy::addr`] to build another scheme).
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drop every open connection and refuse new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Accept connections again after [`Proxy::cut`].
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the proxy is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Delay every chunk of data in both directions by `latency` (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_micros.store(micros, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the blocking accept so its thread sees `closed` and ends.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect(target) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(client_read), Ok(upstream_read), Ok(client_handle), Ok(upstream_handle)) = clones
        else {
            continue;
        };
        {
            let mut connections = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.retain(|s| s.peer_addr().is_ok());
            connections.push(client_handle);
            connections.push(upstream_handle);
        }
        let forward = Arc::clone(shared);
        let backward = Arc::clone(shared);
        let _ = thread::Builder::new()
            .name("natty-testkit-proxy-up".into())
            .spawn(move || pipe(client_read, upstream, &forward));
        let _ = thread::Builder::new()
            .name("natty-testkit-proxy-down".into())
            .spawn(move || pipe(upstream_read, client, &backward));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let latency = shared.latency_micros.load(Ordering::SeqCst);
        if latency > 0 {
            thread::sleep(Duration::from_micros(latency));
        }
        if shared.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
