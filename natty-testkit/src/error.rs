//! The test kit's error.

use std::fmt;
use std::path::PathBuf;

use natty::{BoxError, ConsumeError};

/// What went wrong starting or driving a test server.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No `nats-server` executable was found (see [`find_binary`](crate::find_binary)).
    BinaryNotFound {
        /// Where the kit looked.
        looked_at: String,
        /// The release the cache was searched for.
        version: String,
        /// Where a cached binary of that release would be found, if there is a cache.
        cache: Option<PathBuf>,
    },
    /// The builder's configuration cannot start a server; the text says what to change.
    InvalidConfig(&'static str),
    /// The server did not become ready (or exited); the end of its log says why.
    NotReady {
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The process is not running.
    NotRunning,
    /// A monitoring endpoint answered something other than 200.
    Http(String),
    /// Waiting for something timed out.
    Timeout(&'static str),
    /// An I/O error from the operating system.
    Io(std::io::Error),
    /// A request a [`Harness`](crate::Harness) sent to the server failed.
    Request {
        /// What the harness asked for, such as `"consumer info"`.
        action: &'static str,
        /// The error natty or the client returned.
        source: BoxError,
    },
    /// Creating a served consumer failed, or serving it ended with an error.
    Consume(ConsumeError),
    /// The served stack stopped before what was awaited was seen;
    /// [`Serving::stop`](crate::Serving::stop) returns how it ended.
    Stopped,
    /// What a [`Harness`](crate::Harness) waited for was not seen before its deadline.
    NotSeen {
        /// What it waited for.
        waiting_for: String,
        /// What it saw instead, for the test's failure message.
        seen: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BinaryNotFound {
                looked_at,
                version,
                cache,
            } => {
                write!(
                    f,
                    "no nats-server binary found (looked at {looked_at}): install nats-server \
                     on PATH, set NATS_SERVER_BIN to one"
                )?;
                match cache {
                    Some(cache) => write!(
                        f,
                        ", or put the {version} release's nats-server at {}",
                        cache.display()
                    ),
                    None => write!(f, ", or set NATTY_CACHE_DIR and put it there"),
                }
            }
            Error::NotReady { log_tail } => {
                write!(
                    f,
                    "nats-server did not become ready; log ends with:\n{log_tail}"
                )
            }
            Error::InvalidConfig(why) => write!(f, "invalid test server config: {why}"),
            Error::NotRunning => f.write_str("nats-server is not running"),
            Error::Http(status) => write!(f, "monitoring endpoint answered {status}"),
            Error::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Error::Io(err) => write!(f, "i/o error: {err}"),
            Error::Request { action, .. } => write!(f, "{action} failed"),
            Error::Consume(_) => f.write_str("consuming failed"),
            Error::Stopped => f.write_str("the served stack stopped"),
            Error::NotSeen { waiting_for, seen } => {
                write!(f, "timed out waiting for {waiting_for}; saw {seen}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(err) => Some(err),
            Error::Request { source, .. } => Some(&**source),
            Error::Consume(err) => Some(err),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(err)
    }
}
