//! What every handle shares: the async-nats client, its JetStream context, the cache of
//! key/value stores and the inbox of atomic batches' answers. [`Natty`](crate::Natty) owns one and lends it to each handle it makes,
//! so a feature module never needs the client type itself.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::jetstream;

/// The connection the handles of one [`Natty`](crate::Natty) share.
pub(crate) struct Connection {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    /// Stores found so far, by bucket name: a `Store` carries the bucket's stream info, too
    /// much to look up on every call.
    pub(crate) buckets: Mutex<HashMap<String, std::sync::Arc<jetstream::kv::Store>>>,
    /// Where the answers to atomic batches arrive (the publisher's and multi-key writes'),
    /// once one was sent.
    pub(crate) batch_answers: std::sync::Arc<tokio::sync::OnceCell<crate::publish::batch::Answers>>,
}

impl Connection {
    pub(crate) fn new(client: async_nats::Client, jetstream: jetstream::Context) -> Self {
        Self {
            client,
            jetstream,
            buckets: Mutex::new(HashMap::new()),
            batch_answers: std::sync::Arc::default(),
        }
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// What the server told about itself.
    pub(crate) fn server(&self) -> crate::server::ServerInfo<'_> {
        crate::server::ServerInfo::of(&self.client)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}
