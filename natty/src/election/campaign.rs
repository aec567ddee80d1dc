//! The background task of one node's campaign: acquire with a create, renew with
//! compare-and-set writes, step down when the local lease runs out, release on shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::config::Timings;
use super::leadership::{Command, LeaderState, Term, TermSlot};

/// How a key write ended.
enum Write {
    /// Written; the new revision.
    Done(u64),
    /// The key's revision was not the expected one: someone else wrote it.
    Conflict,
    /// Anything else (timeout, disconnect, server error): outcome unknown.
    Failed,
}

/// What one attempt to take the key found.
enum Attempt {
    Won(Won),
    /// Someone holds the key at this revision.
    Held(u64),
    /// Lost a race for the key, or could not reach the server.
    Missed,
}

/// A term just won: its revision and when the winning write was sent.
struct Won {
    revision: u64,
    sent: Instant,
}

/// Why a term ended.
enum TermEnd {
    /// Lost (conflict or expired local lease): campaign again.
    Lost,
    /// Stepped down on request: campaign again after a pause.
    SteppedDown,
    /// Shut down: stop campaigning.
    Shutdown,
}

pub(crate) struct Campaign {
    pub(crate) store: kv::Store,
    pub(crate) jetstream: jetstream::Context,
    pub(crate) subject: String,
    pub(crate) key: String,
    pub(crate) node: Bytes,
    pub(crate) timings: Timings,
    pub(crate) state: watch::Sender<LeaderState>,
    pub(crate) slot: Arc<TermSlot>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) shutdown: CancellationToken,
}

impl Campaign {
    pub(crate) async fn run(mut self) {
        tracing::debug!(
            key = %self.key,
            lease = ?self.timings.lease,
            per_key_ttl = self.timings.key_ttl.is_some(),
            "election campaign started"
        );
        let mut watch = None;
        let mut sit_out_until = None;
        loop {
            let Some(won) = self.campaign(&mut watch, sit_out_until.take()).await else {
                break;
            };
            match self.lead(won, &mut watch).await {
                TermEnd::Lost => {}
                TermEnd::SteppedDown => {
                    sit_out_until = Some(Instant::now() + self.timings.renew);
                }
                TermEnd::Shutdown => break,
            }
        }
        self.publish(LeaderState::Unknown);
        tracing::debug!(key = %self.key, "election campaign stopped");
    }

    fn publish(&self, state: LeaderState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    /// Campaign until this node wins (`Some`) or shuts down (`None`).
    async fn campaign(
        &mut self,
        watch: &mut Option<kv::Watch>,
        mut sit_out_until: Option<Instant>,
    ) -> Option<Won> {
        // The watch makes releases and marked expiries immediate. Polls catch what it cannot
        // show: expiries without a marker (servers before 2.11) and a lost watch. While the
        // key is seen renewed, the next poll is due when it would expire; once overdue, polls
        // come quickly until the server expires it.
        let overdue_poll = (self.timings.renew / 4).max(Duration::from_millis(100));
        let mut next_poll = Instant::now();
        let mut held_revision = 0;
        loop {
            if watch.is_none() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    created = self.store.watch(&self.key) => *watch = created.ok(),
                }
                if watch.is_none() {
                    next_poll = next_poll.min(Instant::now() + self.timings.renew);
                }
            }
            if let Some(until) = sit_out_until {
                next_poll = next_poll.max(until);
            }
            // `None`: look the key up; `Some(revision)`: the key was released at `revision`.
            let free_at: Option<u64> = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                command = self.commands.recv() => match command {
                    Some(Command::StepDown(reply)) => {
                        let _ = reply.send(false);
                        continue;
                    }
                    None => return None,
                },
                _ = sleep_until(next_poll) => None,
                event = next_event(watch) => match event {
                    Some(Ok(entry)) if entry.operation == Operation::Put => {
                        self.publish(follower(&entry.value));
                        held_revision = entry.revision;
                        next_poll = Instant::now() + self.timings.lease;
                        if entry.value != self.node {
                            // Someone else took over: campaign normally from here on.
                            sit_out_until = None;
                        }
                        continue;
                    }
                    Some(Ok(entry)) => Some(entry.revision),
                    Some(Err(_)) | None => {
                        *watch = None;
                        continue;
                    }
                },
            };
            if sit_out_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            sit_out_until = None;
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                attempt = self.try_acquire(free_at) => attempt,
            };
            let now = Instant::now();
            next_poll = match attempt {
                Attempt::Won(won) => return Some(won),
                Attempt::Held(revision) if revision != held_revision => {
                    held_revision = revision;
                    now + self.timings.lease
                }
                Attempt::Held(_) => now + overdue_poll,
                Attempt::Missed => now + self.timings.renew,
            };
        }
    }

    /// Write the key if it is free; `free_at` is the revision of a delete or expiry just seen.
    async fn try_acquire(&self, free_at: Option<u64>) -> Attempt {
        let expected = match free_at {
            Some(revision) => revision,
            None => match self.store.entry(&self.key).await {
                Ok(None) => 0,
                Ok(Some(entry)) if entry.operation == Operation::Put => {
                    self.publish(follower(&entry.value));
                    return Attempt::Held(entry.revision);
                }
                Ok(Some(entry)) => entry.revision,
                Err(err) => {
                    tracing::debug!(key = %self.key, error = %err, "election: key lookup failed");
                    self.publish(LeaderState::Unknown);
                    return Attempt::Missed;
                }
            },
        };
        let sent = Instant::now();
        let deadline = sent + self.timings.acting;
        let write = tokio::select! {
            write = self.write(expected) => write,
            _ = sleep_until(deadline) => Write::Failed,
        };
        match write {
            Write::Done(revision) if Instant::now() < deadline => {
                Attempt::Won(Won { revision, sent })
            }
            Write::Done(revision) => {
                // Won too late to act on it: hand the key back rather than sit on it.
                self.release(revision).await;
                Attempt::Missed
            }
            Write::Conflict => Attempt::Missed,
            Write::Failed => {
                self.publish(LeaderState::Unknown);
                Attempt::Missed
            }
        }
    }

    /// Lead one term until it ends.
    async fn lead(&mut self, won: Won, watch: &mut Option<kv::Watch>) -> TermEnd {
        let mut revision = won.revision;
        let mut deadline = won.sent + self.timings.acting;
        let mut next_renew = won.sent + self.timings.renew;
        let now = Instant::now();
        self.slot.begin(Term::new(revision, now, deadline));
        self.publish(LeaderState::Leader { term: revision });
        tracing::info!(key = %self.key, term = revision, "election: became leader");
        let retry = (self.timings.renew / 4).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                biased;
                _ = sleep_until(deadline) => {
                    self.end_term_at(deadline, "local lease expired");
                    return TermEnd::Lost;
                }
                _ = self.shutdown.cancelled() => {
                    self.end_term("shutting down");
                    self.release(revision).await;
                    return TermEnd::Shutdown;
                }
                command = self.commands.recv() => {
                    self.end_term("stepping down");
                    self.release(revision).await;
                    return match command {
                        Some(Command::StepDown(reply)) => {
                            let _ = reply.send(true);
                            TermEnd::SteppedDown
                        }
                        None => TermEnd::Shutdown,
                    };
                }
                _ = sleep_until(next_renew) => {
                    let sent = Instant::now();
                    let write = tokio::select! {
                        write = self.write(revision) => write,
                        _ = sleep_until(deadline) => {
                            self.end_term_at(deadline, "renew outlived the local lease");
                            return TermEnd::Lost;
                        }
                    };
                    match write {
                        Write::Done(renewed) => {
                            revision = renewed;
                            // A handle may have seen the lease run out while the renew was
                            // on its way (this task ran late): that term is over for good.
                            if !self.slot.extend(sent + self.timings.acting) {
                                self.end_term_at(deadline, "local lease expired");
                                self.release(revision).await;
                                return TermEnd::Lost;
                            }
                            deadline = sent + self.timings.acting;
                            next_renew = sent + self.timings.renew;
                        }
                        Write::Conflict => {
                            self.end_term("key changed by someone else");
                            return TermEnd::Lost;
                        }
                        Write::Failed => next_renew = Instant::now() + retry,
                    }
                }
                event = next_event(watch) => match event {
                    // A delete or expiry newer than our last write: another node may
                    // already be taking the key.
                    Some(Ok(entry)) if entry.operation != Operation::Put && entry.revision > revision => {
                        self.end_term("key deleted");
                        return TermEnd::Lost;
                    }
                    // Someone else wrote the key (a blind put, Go natty's `AsLeader`, an
                    // operator): they believe they lead, so this node stops now, not at its
                    // next renew.
                    Some(Ok(entry)) if entry.revision > revision && entry.value != self.node => {
                        self.end_term("key written by someone else");
                        self.publish(follower(&entry.value));
                        return TermEnd::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => *watch = None,
                },
            }
        }
    }

    fn end_term(&self, why: &str) {
        self.end_term_at(Instant::now(), why);
    }

    /// End the term as of `at` (for an expired lease: its deadline, however late this runs).
    fn end_term_at(&self, at: Instant, why: &str) {
        if let Some(term) = self.slot.end_at(at) {
            tracing::info!(key = %self.key, term = term.fencing_token(), why, "election: stopped leading");
        }
        self.publish(LeaderState::Follower { leader: None });
    }

    /// Delete the key if it still holds our last write, so a candidate takes over now.
    async fn release(&self, revision: u64) {
        let delete = self.store.delete_expect_revision(&self.key, Some(revision));
        match tokio::time::timeout(self.timings.renew, delete).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::debug!(key = %self.key, error = %err, "election: release failed");
            }
            Err(_) => tracing::debug!(key = %self.key, "election: release timed out"),
        }
    }

    /// Write our node name if the key's last revision is `expected` (0: no value at all),
    /// with the per-key TTL on servers that have it. async-nats has no update with a TTL,
    /// so this publishes the KV write itself.
    async fn write(&self, expected: u64) -> Write {
        let mut message = PublishMessage::build()
            .payload(self.node.clone())
            .expected_last_subject_sequence(expected);
        if let Some(ttl) = self.timings.key_ttl {
            message = message.ttl(ttl);
        }
        let ack = match self
            .jetstream
            .send_publish(self.subject.clone(), message)
            .await
        {
            Ok(ack) => ack.await,
            Err(err) => Err(err),
        };
        match ack {
            Ok(ack) => Write::Done(ack.sequence),
            Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Write::Conflict,
            Err(err) => {
                tracing::debug!(key = %self.key, error = %err, "election: write failed");
                Write::Failed
            }
        }
    }
}

fn follower(value: &Bytes) -> LeaderState {
    LeaderState::Follower {
        leader: Some(String::from_utf8_lossy(value).into_owned()),
    }
}

/// The next watch event; pending forever when there is no watch.
async fn next_event(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}
