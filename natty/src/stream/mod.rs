//! Streams and their durable consumers, through a [`Stream`] handle from
//! [`Natty::stream`](crate::Natty::stream).
//!
//! [`Stream::create`] is idempotent like Go natty's `CreateStream`, but stricter: an existing
//! stream with other subjects is an error ([`StreamErrorKind::Mismatch`]), never a silent
//! mismatch. Consumers are always durable pull consumers with explicit acks; their settings
//! are [`ConsumerOptions`](crate::ConsumerOptions).
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use natty::ConsumerOptions;
//!
//! # async fn run(natty: natty::Natty) -> Result<(), Box<dyn std::error::Error>> {
//! let orders = natty.stream("ORDERS")?;          // the name is checked here, once
//! orders.create(["orders.>"]).await?;
//! orders
//!     .create_consumer(
//!         "billing",
//!         ["orders.created"],
//!         ConsumerOptions::default().ack_wait(Duration::from_secs(10)).max_deliver(5),
//!     )
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod handle;

use std::time::Duration;

pub use crate::error::{StreamError, StreamErrorKind};
pub use handle::Stream;

/// Go natty's stream defaults: limits retention, file storage, 30 days max age.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
