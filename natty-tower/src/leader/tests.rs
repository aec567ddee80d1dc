use std::future::poll_fn;
use std::task::Poll;

use natty::Message;
use tokio::sync::watch;
use tower::{service_fn, Layer, Service, ServiceExt};

use super::{FencingToken, LeaderError, LeaderErrorKind, LeaderLayer, LeaderMode};
use crate::error::BoxError;

type Token = Option<FencingToken>;

fn token_echo(
    gate: watch::Receiver<Option<u64>>,
    mode: LeaderMode,
) -> impl Service<Message, Response = Token, Error = BoxError> + Clone {
    LeaderLayer::new(gate, mode).layer(service_fn(|msg: Message| async move {
        Ok::<_, BoxError>(msg.extensions().get::<FencingToken>().copied())
    }))
}

async fn is_pending<S: Service<Message>>(service: &mut S) -> bool {
    poll_fn(|cx| Poll::Ready(service.poll_ready(cx).is_pending())).await
}

fn not_leader(err: &BoxError) -> bool {
    err.downcast_ref::<LeaderError>()
        .is_some_and(|err| err.kind() == LeaderErrorKind::NotLeader)
}

#[tokio::test]
async fn wait_mode_is_not_ready_on_a_follower_until_it_leads() {
    let (leadership, gate) = watch::channel(None);
    let mut service = token_echo(gate, LeaderMode::Wait);
    assert!(is_pending(&mut service).await);
    assert!(
        is_pending(&mut service).await,
        "still waiting, no busy loop"
    );

    let (ready, ()) = tokio::join!(service.ready(), async {
        leadership.send_replace(Some(4));
    });
    let (msg, _) = Message::builder("jobs", "").build();
    assert_eq!(
        ready.unwrap().call(msg).await.unwrap(),
        Some(FencingToken(4))
    );
}

#[tokio::test]
async fn wait_mode_ignores_changes_that_keep_it_a_follower() {
    let (leadership, gate) = watch::channel(None);
    let mut service = token_echo(gate, LeaderMode::Wait);
    assert!(is_pending(&mut service).await);
    leadership.send_replace(None);
    assert!(is_pending(&mut service).await);
}

#[tokio::test]
async fn wait_mode_stays_pending_when_the_election_is_gone() {
    let (leadership, gate) = watch::channel(None);
    let mut service = token_echo(gate, LeaderMode::Wait);
    drop(leadership);
    assert!(is_pending(&mut service).await);
}

#[tokio::test]
async fn reject_mode_fails_calls_at_once_on_a_follower() {
    let (leadership, gate) = watch::channel(None);
    let service = token_echo(gate, LeaderMode::Reject);
    let (msg, recorder) = Message::builder("jobs", "").build();
    let err = service.clone().oneshot(msg).await.unwrap_err();
    assert!(not_leader(&err));
    assert!(recorder.settlements().is_empty(), "the ack layer decides");

    leadership.send_replace(Some(9));
    let (msg, _) = Message::builder("jobs", "").build();
    assert_eq!(service.oneshot(msg).await.unwrap(), Some(FencingToken(9)));
}

#[tokio::test]
async fn leadership_lost_between_ready_and_call_rejects_the_call() {
    let (leadership, gate) = watch::channel(Some(1));
    let mut service = token_echo(gate, LeaderMode::Wait);
    let ready = service.ready().await.unwrap();
    leadership.send_replace(None);
    let (msg, _) = Message::builder("jobs", "").build();
    assert!(not_leader(&ready.call(msg).await.unwrap_err()));
}
