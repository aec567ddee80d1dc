use std::time::Duration;

use natty::message::Recorder;
use natty::message::{Message, Settlement};
use tokio::sync::oneshot;
use tower::{service_fn, Layer, ServiceExt};

use super::InProgressLayer;
use crate::error::BoxError;

const ACK_WAIT: Duration = Duration::from_secs(30);

/// Let the spawned call run until `expected` settlements are in, within a bound of turns.
async fn settle_down(recorder: &Recorder, expected: usize) {
    for _ in 0..100 {
        if recorder.settlements().len() >= expected {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Spawn one call of a handler that runs until `finish` fires; returns once it runs.
async fn start_long_handler(
    finish: oneshot::Receiver<()>,
) -> (Recorder, tokio::task::JoinHandle<()>) {
    let (started, running) = oneshot::channel();
    let mut handler = Some((started, finish));
    let service = InProgressLayer::new(ACK_WAIT).layer(service_fn(move |_: Message| {
        let (started, finish) = handler.take().expect("called once");
        async move {
            let _ = started.send(());
            let _ = finish.await;
            Ok::<_, BoxError>(())
        }
    }));
    let (msg, recorder) = Message::builder("reports", "").build();
    let call = tokio::spawn(async move {
        service.oneshot(msg).await.unwrap();
    });
    running.await.unwrap();
    (recorder, call)
}

#[tokio::test(start_paused = true)]
async fn sends_in_progress_every_half_ack_wait_and_stops_when_the_handler_ends() {
    let (finish, finished) = oneshot::channel();
    let (recorder, call) = start_long_handler(finished).await;

    tokio::time::advance(Duration::from_secs(14)).await;
    settle_down(&recorder, 1).await;
    assert!(
        recorder.settlements().is_empty(),
        "nothing before half the ack wait"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    settle_down(&recorder, 1).await;
    assert_eq!(recorder.settlements(), [Settlement::InProgress]);

    tokio::time::advance(Duration::from_secs(15)).await;
    settle_down(&recorder, 2).await;
    assert_eq!(recorder.settlements().len(), 2);

    finish.send(()).unwrap();
    call.await.unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    assert_eq!(
        recorder.settlements(),
        [Settlement::InProgress, Settlement::InProgress],
        "no heartbeat after the handler ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quick_handler_sends_nothing() {
    let service = InProgressLayer::new(ACK_WAIT).layer(service_fn(|_: Message| async {
        tokio::time::sleep(Duration::from_secs(14)).await;
        Ok::<_, BoxError>(())
    }));
    let (msg, recorder) = Message::builder("reports", "").build();
    service.oneshot(msg).await.unwrap();
    assert!(recorder.settlements().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stops_once_the_message_is_settled() {
    let service = InProgressLayer::new(ACK_WAIT).layer(service_fn(|msg: Message| async move {
        msg.ack().await?;
        tokio::time::sleep(Duration::from_secs(100)).await;
        Ok::<_, BoxError>(())
    }));
    let (msg, recorder) = Message::builder("reports", "").build();
    service.oneshot(msg).await.unwrap();
    assert_eq!(recorder.settlements(), [Settlement::Ack]);
}

#[tokio::test(start_paused = true)]
async fn without_an_interval_the_consumers_ack_wait_is_used() {
    let settings =
        natty::ConsumerSettings::new("JOBS", "worker").with_ack_wait(Duration::from_secs(4));
    let service = InProgressLayer::from_consumer().layer(service_fn(|_: Message| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, BoxError>(())
    }));
    let (msg, recorder) = Message::builder("jobs.run", "")
        .consumer_settings(settings)
        .build();
    service.oneshot(msg).await.unwrap();
    // Every 2 s (half the 4 s ack wait) during a 5 s call: at 2 s and 4 s.
    assert_eq!(
        recorder.settlements(),
        [Settlement::InProgress, Settlement::InProgress]
    );
}
