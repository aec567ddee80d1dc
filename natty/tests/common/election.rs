//! What the election tests share: every term any node held, and waiting for one leader.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::{LeaderState, Leadership, Term};
use tokio::time::{timeout, Instant};

/// Every term any node held, to check that none overlap.
#[derive(Clone, Default)]
pub(crate) struct Terms(Arc<Mutex<Vec<(String, Term)>>>);

impl Terms {
    pub(crate) fn record(&self, leadership: &Leadership) {
        let (terms, leadership) = (self.clone(), leadership.clone());
        tokio::spawn(async move {
            while let Ok(term) = leadership.wait_leader().await {
                terms
                    .0
                    .lock()
                    .unwrap()
                    .push((leadership.node().to_owned(), term.clone()));
                term.ended().await;
            }
        });
    }

    pub(crate) fn all(&self) -> Vec<(String, Term)> {
        self.0.lock().unwrap().clone()
    }

    /// No two terms overlap, and fencing tokens increase with time.
    pub(crate) fn assert_safe(&self) {
        let mut terms = self.all();
        terms.sort_by_key(|(_, term)| term.started_at());
        for pair in terms.windows(2) {
            let ((a_node, a), (b_node, b)) = (&pair[0], &pair[1]);
            let a_end = a.ended_at().unwrap_or_else(Instant::now);
            assert!(
                a_end <= b.started_at(),
                "{a_node} (term {}) still led {:?} after {b_node} (term {}) started",
                a.fencing_token(),
                a_end - b.started_at(),
                b.fencing_token()
            );
            assert!(
                a.fencing_token() < b.fencing_token(),
                "fencing tokens went back"
            );
        }
    }
}

/// Wait until one of `nodes` leads and every other running one follows it by name; two
/// leaders at any check fail the test.
pub(crate) async fn settled_leader(nodes: &[&Leadership], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let leaders: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_leader()).collect();
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [leader] = leaders[..] {
            let name = nodes[leader].node();
            let followers_agree = nodes.iter().enumerate().all(|(i, n)| {
                i == leader
                    || n.is_stopped()
                    || n.state()
                        == LeaderState::Follower {
                            leader: Some(name.to_owned()),
                        }
            });
            if followers_agree {
                return leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no settled leader within {within:?}"
        );
        // Wake on any node's state change, or re-check shortly (lease expiries publish late).
        let mut changes: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
        let any_change =
            futures_util::future::select_all(changes.iter_mut().map(|rx| Box::pin(rx.changed())));
        let _ = timeout(Duration::from_millis(100), any_change).await;
    }
}
