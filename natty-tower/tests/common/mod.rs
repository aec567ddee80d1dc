//! Helpers shared by natty-tower's integration tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;

/// How long a test waits for its handlers to get through their messages.
const HANDLED_DEADLINE: Duration = Duration::from_secs(90);

/// Counts handled ids (and how often each was handled), reporting the number of distinct ids
/// through a watch channel so tests wait on progress instead of sleeping.
#[derive(Clone)]
pub(crate) struct Handled {
    ids: Arc<Mutex<HashMap<u64, u32>>>,
    count: watch::Sender<usize>,
}

impl Handled {
    pub(crate) fn new() -> (Self, watch::Receiver<usize>) {
        let (count, rx) = watch::channel(0);
        let handled = Self {
            ids: Arc::default(),
            count,
        };
        (handled, rx)
    }

    pub(crate) fn record(&self, id: u64) {
        let mut ids = self.ids.lock().unwrap();
        *ids.entry(id).or_default() += 1;
        self.count.send_replace(ids.len());
    }

    pub(crate) fn ids(&self) -> HashSet<u64> {
        self.ids.lock().unwrap().keys().copied().collect()
    }

    #[allow(dead_code)] // not every test binary asks
    pub(crate) fn times(&self, id: u64) -> u32 {
        self.ids.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub(crate) fn duplicates(&self) -> usize {
        self.ids
            .lock()
            .unwrap()
            .values()
            .filter(|n| **n > 1)
            .count()
    }
}

/// Wait until `n` distinct ids were handled.
pub(crate) async fn wait_count(count: &mut watch::Receiver<usize>, n: usize) {
    timeout(HANDLED_DEADLINE, count.wait_for(|seen| *seen >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} distinct messages handled within {HANDLED_DEADLINE:?}"))
        .expect("handler alive");
}
