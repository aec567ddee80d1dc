//! One `nats-server` process with JetStream, on loopback ports of its own.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::{binary, Error};

/// How long [`Server::start`] and [`Server::restart`] wait for `/healthz` by default.
/// How often a start is tried when a port it picked was taken in between.
pub(crate) const START_ATTEMPTS: u32 = 3;

pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// TLS settings for a test server.
#[derive(Clone, Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    ca: Option<PathBuf>,
    verify_clients: bool,
}

impl Tls {
    /// Serve TLS with this certificate chain and private key (PEM files).
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            ca: None,
            verify_clients: false,
        }
    }

    /// Require every client to present a certificate signed by this CA (mutual TLS).
    pub fn require_client_certs(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca = Some(ca.into());
        self.verify_clients = true;
        self
    }
}

/// How clients must authenticate to a test server.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Anyone may connect.
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// A shared token.
    Token(String),
    /// An nkey user, named by its public key (`U...`).
    Nkey(String),
}

impl fmt::Debug for Auth {
    // Secrets stay out of test logs, like everywhere else in natty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Nkey(public) => f.debug_tuple("Nkey").field(public).finish(),
        }
    }
}

/// Builds a [`Server`]; [`Server::start`] is the shortcut for the defaults.
#[derive(Clone, Debug, Default)]
pub struct ServerBuilder {
    name: Option<String>,
    tls: Option<Tls>,
    auth: Auth,
    snippet: String,
    pub(crate) cluster: Option<ClusterBlock>,
    pub(crate) ports: Option<(u16, u16)>,
}

#[derive(Clone, Debug)]
pub(crate) struct ClusterBlock {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) routes: Vec<u16>,
}

impl ServerBuilder {
    /// The server's name (`server_name`); defaults to one made from its port.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Serve TLS on the client port.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Require clients to authenticate.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Append raw nats-server configuration, for settings this builder has no method for
    /// (for example `max_payload: 4096`, or `jetstream { limits { batch { timeout: "1s" } } }`).
    /// A `jetstream` block here replaces the kit's, but the data stays in
    /// [`Server::store_dir`]: the kit passes that directory on the command line. So a snippet
    /// must not set `store_dir` itself; [`start`](Self::start) refuses one as
    /// [`Error::InvalidConfig`].
    pub fn config_snippet(mut self, snippet: impl Into<String>) -> Self {
        self.snippet.push_str(&snippet.into());
        self.snippet.push('\n');
        self
    }

    /// Start the server and wait until `/healthz` reports it ready.
    ///
    /// # Errors
    /// When the binary is missing, a config snippet sets `store_dir`, a port cannot be had,
    /// or the server does not get ready.
    pub fn start(self) -> Result<Server, Error> {
        let mut attempt = 1;
        loop {
            let server = self.clone().launch()?;
            match server.wait_ready(READY_TIMEOUT) {
                Ok(()) => return Ok(server),
                // Free ports are found by binding and releasing them, so another process can
                // take one before the server binds it; then try again on fresh ports.
                Err(Error::NotReady { log_tail })
                    if self.ports.is_none()
                        && attempt < START_ATTEMPTS
                        && log_tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Spawn the process without waiting for it to be ready (cluster nodes need each other).
    pub(crate) fn launch(self) -> Result<Server, Error> {
        if self.snippet.contains("store_dir") {
            return Err(Error::InvalidConfig(
                "a config snippet must not set store_dir: each server keeps its data in its own \
                 temporary directory (Server::store_dir)",
            ));
        }
        let bin = binary::find_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("natty-testkit-")
            .tempdir()?;
        let (port, http_port) = match self.ports {
            Some(ports) => ports,
            None => {
                let ports = free_ports(2)?; // exactly two, or an error
                (ports[0], ports[1])
            }
        };
        let config = dir.path().join("nats-server.conf");
        fs::write(&config, self.render(port, http_port))?;
        let server = Server {
            bin,
            dir,
            config,
            port,
            http_port,
            tls: self.tls.is_some(),
            state: Mutex::new(State::default()),
        };
        server.spawn()?;
        Ok(server)
    }

    fn render(&self, port: u16, http_port: u16) -> String {
        let name = self.name.clone().unwrap_or_else(|| format!("natty-{port}"));
        // JetStream's store directory is given on the command line (see `spawn`).
        let mut conf = format!(
            "server_name: {name:?}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{http_port}\"\n\
             jetstream {{}}\n"
        );
        if let Some(tls) = &self.tls {
            conf.push_str(&format!(
                "tls {{ cert_file: {:?}, key_file: {:?}",
                tls.cert, tls.key
            ));
            if let Some(ca) = &tls.ca {
                conf.push_str(&format!(", ca_file: {ca:?}"));
            }
            conf.push_str(&format!(", verify: {} }}\n", tls.verify_clients));
        }
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => conf.push_str(&format!(
                "authorization {{ user: {user:?}, password: {password:?} }}\n"
            )),
            Auth::Token(token) => conf.push_str(&format!("authorization {{ token: {token:?} }}\n")),
            Auth::Nkey(public) => conf.push_str(&format!(
                "authorization {{ users: [ {{ nkey: {public:?} }} ] }}\n"
            )),
        }
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            conf.push_str(&format!(
                "cluster {{ name: {:?}, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                cluster.name,
                cluster.port,
                routes.join(", ")
            ));
        }
        conf.push_str(&self.snippet);
        conf
    }
}

#[derive(Debug, Default)]
struct State {
    child: Option<Child>,
    paused: bool,
}

/// A running `nats-server` with JetStream, a temporary store directory and loopback ports.
///
/// Every method takes `&self`, so a server can be shared (`Arc<Server>`) between a test and the
/// tasks that break it. Dropping it kills the process and removes its directory.
///
/// # Example
/// ```no_run
/// let server = natty_testkit::Server::start()?;
/// println!("connect to {}", server.url());
/// server.kill();
/// server.restart()?; // same port, same JetStream data
/// # Ok::<(), natty_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Server {
    bin: PathBuf,
    dir: TempDir,
    config: PathBuf,
    port: u16,
    http_port: u16,
    tls: bool,
    state: Mutex<State>,
}

impl Server {
    /// Start a server with the defaults: JetStream, no TLS, no auth.
    ///
    /// # Errors
    /// See [`ServerBuilder::start`].
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// A builder for a server with TLS, auth or extra configuration.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>` (`tls://` when TLS is on).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The monitoring base URL, `http://127.0.0.1:<port>`.
    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The JetStream store directory, kept across [`Server::restart`].
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.lock().child.as_ref().map(Child::id)
    }

    /// Whether the process is running (paused counts as running).
    pub fn is_running(&self) -> bool {
        let mut state = self.lock();
        match state.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kill the process with SIGKILL and wait for it to exit. Does nothing if it is not running.
    pub fn kill(&self) {
        let mut state = self.lock();
        if let Some(mut child) = state.child.take() {
            // A paused process dies from SIGKILL as well; nothing to resume first.
            let _ = child.kill();
            let _ = child.wait();
        }
        state.paused = false;
    }

    /// Start the process again on the same ports and store directory (killing it first if it
    /// still runs) and wait until it is ready.
    ///
    /// # Errors
    /// When the process cannot be started or does not get ready.
    pub fn restart(&self) -> Result<(), Error> {
        self.kill();
        self.spawn()?;
        self.wait_ready(READY_TIMEOUT)
    }

    /// Freeze the process with SIGSTOP: connections stay open but nothing is answered.
    ///
    /// # Errors
    /// When the process is not running.
    pub fn pause(&self) -> Result<(), Error> {
        self.signal(Signal::SIGSTOP)?;
        self.lock().paused = true;
        // SIGSTOP takes effect asynchronously; return only once the process really stopped,
        // so a test's next request cannot still be answered.
        if let Some(pid) = self.pid() {
            let stat = PathBuf::from(format!("/proc/{pid}/stat"));
            let deadline = Instant::now() + Duration::from_secs(5);
            while stat.exists() && !process_stopped(&stat) {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout("the paused process to stop"));
                }
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Continue a paused process with SIGCONT.
    ///
    /// # Errors
    /// When the process is not running.
    pub fn resume(&self) -> Result<(), Error> {
        self.signal(Signal::SIGCONT)?;
        self.lock().paused = false;
        Ok(())
    }

    /// Read a monitoring endpoint, such as `/jsz` or `/varz`, and return the body.
    ///
    /// # Errors
    /// When the endpoint cannot be reached or does not answer 200.
    pub fn monitoring(&self, path: &str) -> Result<String, Error> {
        http_get(self.http_port, path)
    }

    /// Wait until `/healthz` answers 200, up to `timeout`.
    ///
    /// # Errors
    /// [`Error::NotReady`] with the end of the server log when the deadline passes or the
    /// process exits.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get(self.http_port, "/healthz").is_ok() {
                return Ok(());
            }
            let exited = {
                let mut state = self.lock();
                match state.child.as_mut() {
                    Some(child) => !matches!(child.try_wait(), Ok(None)),
                    None => true,
                }
            };
            if exited || Instant::now() >= deadline {
                return Err(Error::NotReady {
                    log_tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn(&self) -> Result<(), Error> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        // The store directory goes on the command line: a flag outlasts a `jetstream { .. }`
        // block in a config snippet, which replaces the config's own and would otherwise
        // move the data to the server's default directory, shared and never removed.
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("--store_dir")
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut state = self.lock();
        state.child = Some(child);
        state.paused = false;
        Ok(())
    }

    fn signal(&self, signal: Signal) -> Result<(), Error> {
        let pid = self.pid().ok_or(Error::NotRunning)?;
        let pid = i32::try_from(pid).map_err(|_| Error::NotRunning)?;
        kill(Pid::from_raw(pid), signal).map_err(|errno| Error::Io(errno.into()))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a child handle and a flag; a panic elsewhere cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `/proc/<pid>/stat` says the process is stopped (state `T`).
pub(crate) fn process_stopped(stat: &Path) -> bool {
    fs::read_to_string(stat)
        .ok()
        .and_then(|text| {
            // The state follows the parenthesised command name.
            let after = text.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state == "T")
        })
        .unwrap_or(true)
}

/// `count` distinct ports on 127.0.0.1 that were free a moment ago. All are held until all
/// are found: a port released at once can be handed out again by the next bind.
pub(crate) fn free_ports(count: usize) -> Result<Vec<u16>, Error> {
    let held = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

fn http_get(port: u16, path: &str) -> Result<String, Error> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
        Ok(body.to_owned())
    } else {
        Err(Error::Http(
            head.lines().next().unwrap_or_default().to_owned(),
        ))
    }
}
