//! A member's lanes: each partition's messages held by stream sequence, the fences that keep
//! a later message from overtaking one that will come back, and which lanes may start a call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

use super::config::{MemberSummary, Timers};
use super::stall::StallWatch;
use crate::consume::engine::{Engine, Expiry, Finished, Outcome, Steady};
use crate::error::{BoxError, Error};
use crate::group::error::{GroupError, GroupErrorKind};
use crate::message::{Acker, Message, Settlement};

/// One partition's messages by stream sequence, and what it waits for.
#[derive(Default)]
pub(super) struct Lane {
    pub(super) held: BTreeMap<u64, Held>,
    pub(super) busy: Option<(u64, Acker)>,
    /// A message that will come back (nak'd, dropped, unsettled) and must go first: later
    /// ones wait for it until it is handled or the time is up.
    pub(super) fence: Option<(u64, Instant)>,
}

/// A message waiting in its lane.
pub(super) struct Held {
    pub(super) message: Message,
    pub(super) deadline: Instant,
    pub(super) pin: Option<Arc<str>>,
}

/// Which lane and message a call is for.
pub(super) struct Slot {
    pub(super) partition: u32,
    pub(super) seq: u64,
}

pub(super) fn held_count(lanes: &HashMap<u32, Lane>) -> usize {
    lanes
        .values()
        .map(|l| l.held.len() + usize::from(l.busy.is_some()))
        .sum()
}

/// Drop every held message (the server redelivers them) and fence each lane at its first.
pub(super) fn drop_held(lanes: &mut HashMap<u32, Lane>, wait: Duration) -> u64 {
    let until = Instant::now() + wait;
    let mut dropped = 0;
    for lane in lanes.values_mut() {
        if let Some((&first, _)) = lane.held.first_key_value() {
            let fence = lane.fence.map_or(first, |(seq, _)| seq.min(first));
            lane.fence = Some((fence, until));
        }
        dropped += lane.held.len() as u64;
        lane.held.clear();
    }
    dropped
}

pub(super) fn next_fence_end(lanes: &HashMap<u32, Lane>) -> Option<Instant> {
    lanes
        .values()
        .filter(|l| l.busy.is_none() && !l.held.is_empty())
        .filter_map(|l| l.fence.map(|(_, until)| until))
        .min()
}

/// Free a finished call's lane and fence it when its message will come back.
pub(super) fn finish(lanes: &mut HashMap<u32, Lane>, finished: Finished<Slot>, timers: &Timers) {
    let settlement = finished.settlement();
    let Finished {
        tag: Slot { partition, seq },
        outcome,
        ..
    } = finished;
    let Some(lane) = lanes.get_mut(&partition) else {
        return;
    };
    lane.busy = None;
    let comes_back = match (outcome, settlement) {
        // Unsettled: the server redelivers it when its ack wait runs out.
        (Outcome::Expired, _) => Some(timers.ack_wait),
        (_, Some(Settlement::Nak(delay))) => Some(delay.unwrap_or_default()),
        (_, Some(Settlement::Ack | Settlement::DoubleAck | Settlement::Term)) => None,
        _ => Some(timers.ack_wait),
    };
    if let Some(after) = comes_back {
        tracing::debug!(target: "natty", partition, seq, "partition waits for a message to come back");
        lane.fence = Some((
            seq,
            Instant::now() + after + timers.pull_expiry + timers.ack_wait,
        ));
    }
}

/// Starting calls: which lanes may go, and handing their first messages to the engine.
pub(super) struct Starts<'a> {
    pub(super) watch: &'a Arc<StallWatch>,
    pub(super) epoch: u64,
    /// How long a lane waits for a message it dropped as stale to come back.
    pub(super) stale_wait: Duration,
}

impl Starts<'_> {
    /// Whether some lane has a message that may start now.
    pub(super) fn any_ready(
        &self,
        lanes: &mut HashMap<u32, Lane>,
        summary: &mut MemberSummary,
    ) -> bool {
        let steady = self.watch.steady_since(self.epoch);
        let now = Instant::now();
        lanes.iter_mut().any(|(&partition, lane)| {
            lane_may_start(partition, lane, steady, now, self.stale_wait, summary)
        })
    }

    /// Start every lane that may go, while the service stays ready.
    pub(super) fn start<S>(
        &self,
        lanes: &mut HashMap<u32, Lane>,
        engine: &mut Engine<S, Slot>,
        summary: &mut MemberSummary,
    ) -> Result<(), GroupError>
    where
        S: Service<Message>,
        S::Error: Into<BoxError>,
    {
        let steady = self.watch.steady_since(self.epoch);
        let now = Instant::now();
        for (&partition, lane) in lanes.iter_mut() {
            if !lane_may_start(partition, lane, steady, now, self.stale_wait, summary) {
                continue;
            }
            match engine.ready_now() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(err) => return Err(Error::with_source(GroupErrorKind::Service, err)),
            }
            let Some((seq, held)) = lane.held.pop_first() else {
                continue;
            };
            lane.busy = Some((seq, held.message.acker().clone()));
            let steady: Arc<dyn Steady> = Arc::clone(self.watch) as Arc<dyn Steady>;
            let expiry = Expiry::new(held.deadline, steady, self.epoch);
            engine.start(held.message, Slot { partition, seq }, Some(expiry));
        }
        Ok(())
    }
}

/// Whether the lane is idle and its first message may go: not behind a fence, within its
/// handler budget and no stall since. Messages past their budget (all of them, after a stall)
/// are dropped on the way, since the server may have given them to another instance already,
/// and the lane is fenced at the first of them until they come back.
fn lane_may_start(
    partition: u32,
    lane: &mut Lane,
    steady: bool,
    now: Instant,
    stale_wait: Duration,
    summary: &mut MemberSummary,
) -> bool {
    if lane.busy.is_some() {
        return false;
    }
    loop {
        let Some((&seq, first)) = lane.held.first_key_value() else {
            return false;
        };
        if let Some((fence, until)) = lane.fence {
            if seq > fence && now < until {
                return false;
            }
            // An earlier message (a redelivery) may go first; the fence stays for later ones.
            if seq >= fence || now >= until {
                lane.fence = None;
            }
        }
        if now < first.deadline && steady {
            return true;
        }
        let before = lane.held.len();
        lane.held.retain(|_, held| steady && now < held.deadline);
        summary.stale += (before - lane.held.len()) as u64;
        tracing::debug!(target: "natty", partition, seq, dropped = before - lane.held.len(), "dropped messages past their handler budget");
        lane.fence = Some((seq, now + stale_wait));
    }
}
