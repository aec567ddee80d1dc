//! A JetStream cluster of several `nats-server` processes joined by routes.

use std::time::{Duration, Instant};

use crate::server::{free_ports, ClusterBlock, READY_TIMEOUT, START_ATTEMPTS};
use crate::{Error, Server, ServerBuilder};

/// N servers in one cluster, each with JetStream; any node can be killed, paused or restarted.
///
/// # Example
/// ```no_run
/// let cluster = natty_testkit::Cluster::start(3)?;
/// let urls = cluster.urls(); // give them all to the client
/// cluster.node(0).kill();
/// cluster.node(0).restart()?;
/// # Ok::<(), natty_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Server>,
}

impl Cluster {
    /// Start `size` nodes named `n0`, `n1`, ... and wait until each is ready, which includes a
    /// JetStream meta leader being elected.
    ///
    /// # Errors
    /// When a node cannot start or the cluster does not form in time.
    pub fn start(size: usize) -> Result<Self, Error> {
        Self::start_with(size, |builder| builder)
    }

    /// Like [`Cluster::start`], with each node's builder passed through `configure` first.
    ///
    /// # Errors
    /// When a node cannot start or the cluster does not form in time.
    pub fn start_with(
        size: usize,
        configure: impl Fn(ServerBuilder) -> ServerBuilder,
    ) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::launch(size, &configure) {
                Ok(cluster) => return Ok(cluster),
                // A port picked for a node can be taken by another process before the node
                // binds it; the cluster then never forms. Start over on fresh ports.
                Err(_) if attempt < START_ATTEMPTS => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    fn launch(
        size: usize,
        configure: &impl Fn(ServerBuilder) -> ServerBuilder,
    ) -> Result<Self, Error> {
        // Route, client and monitoring ports of every node, all distinct.
        let ports = free_ports(size * 3)?;
        let (route_ports, node_ports) = ports.split_at(size);
        let mut nodes = Vec::with_capacity(size);
        for (index, route_port) in route_ports.iter().enumerate() {
            let mut builder = configure(Server::builder().name(format!("n{index}")));
            builder.cluster = Some(ClusterBlock {
                name: "natty-test".into(),
                port: *route_port,
                routes: route_ports
                    .iter()
                    .copied()
                    .filter(|p| p != route_port)
                    .collect(),
            });
            builder.ports = Some((node_ports[2 * index], node_ports[2 * index + 1]));
            nodes.push(builder.launch()?);
        }
        // Dropping `cluster` on an error below kills every node it started.
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            node.wait_ready(READY_TIMEOUT)?;
        }
        cluster.wait_formed(READY_TIMEOUT)?;
        Ok(cluster)
    }

    /// Wait until a meta leader is elected and has heard from every other running node
    /// recently, so replicated streams can be placed at once (older servers report healthy
    /// before that).
    ///
    /// # Errors
    /// [`Error::Timeout`] when the cluster does not form in time.
    pub fn wait_formed(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let running = self.nodes.iter().filter(|node| node.is_running()).count();
        loop {
            let formed = self.nodes.iter().any(|node| {
                let Ok(body) = node.monitoring("/jsz") else {
                    return false;
                };
                let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else {
                    return false;
                };
                let meta = &jsz["meta_cluster"];
                let leader_known = meta["leader"].as_str().is_some_and(|l| !l.is_empty());
                // Peers the leader has heard from recently (`active` is nanoseconds since).
                let live_peers = meta["replicas"].as_array().map_or(0, |peers| {
                    peers
                        .iter()
                        .filter(|peer| {
                            peer["offline"].as_bool() != Some(true)
                                && peer["active"].as_u64().is_some_and(|ns| ns < 5_000_000_000)
                        })
                        .count()
                });
                leader_known && live_peers + 1 >= running
            });
            if formed {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("the JetStream cluster to form"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node at `index`.
    ///
    /// # Panics
    /// When `index` is not below the cluster size.
    pub fn node(&self, index: usize) -> &Server {
        &self.nodes[index]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Server] {
        &self.nodes
    }

    /// The client URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Server::url).collect()
    }

    /// The index of the node whose client port is `port`, to find which node a client uses.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port() == port)
    }

    /// The name of the JetStream meta leader, as a running node reports it.
    pub fn meta_leader(&self) -> Option<String> {
        self.nodes.iter().find_map(|node| {
            let body = node.monitoring("/jsz").ok()?;
            let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
            jsz["meta_cluster"]["leader"]
                .as_str()
                .filter(|leader| !leader.is_empty())
                .map(str::to_owned)
        })
    }

    /// Wait until a meta leader is elected, up to `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when none is elected in time.
    pub fn wait_meta_leader(&self, timeout: Duration) -> Result<String, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.meta_leader() {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("a JetStream meta leader"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
