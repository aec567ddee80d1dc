//! Processors against a real server, read back by a plain async-nats client: each input's
//! outputs are stored once, all of them, also when an input comes back after its outputs
//! were stored; a handler whose outputs change keeps the first stored; outputs that cannot be
//! one batch are stored never. On a server without atomic batches the input fails
//! `Unsupported` and nothing is stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use natty::error::BatchErrorKind;
use natty::process::{Processed, Processor};
use natty::{
    BatchError, BoxError, CancellationToken, ConsumeConfig, ConsumerOptions, Message, Natty,
    OutgoingMessage,
};
use natty_testkit::Server;
use tokio::task::JoinHandle;
use tower::{service_fn, Service, ServiceExt};

mod common;
use common::connect;
use common::consume::wait_drained;

const DEADLINE: Duration = Duration::from_secs(30);

/// Streams `INPUTS` (`in.>`) and `OUTPUTS` (`out.>`), and `count` inputs `in.<n>`, payload `n`.
async fn inputs(server: &Server, count: u64) -> Natty {
    let natty = connect(server).await;
    natty
        .stream("INPUTS")
        .unwrap()
        .create(["in.>"])
        .await
        .unwrap();
    natty
        .stream("OUTPUTS")
        .unwrap()
        .create(["out.>"])
        .await
        .unwrap();
    for n in 1..=count {
        natty
            .publisher()
            .publish_acked(&format!("in.{n}"), n.to_string())
            .await
            .unwrap();
    }
    natty
}

/// The consumer `processor` of `INPUTS`, delivering a failed input again after 100 ms.
async fn consumer(natty: &Natty, max_deliver: i64) -> natty::Consumer {
    let options = ConsumerOptions::default()
        .ack_wait(Duration::from_secs(5))
        .max_deliver(max_deliver)
        .backoff(vec![Duration::from_millis(100)]);
    natty
        .consumer(ConsumeConfig::new("INPUTS", "processor").consumer_options(options))
        .await
        .unwrap()
}

/// Every stored output, as a plain client reads the stream: `(Nats-Msg-Id, payload)`.
async fn outputs(server: &Server) -> Vec<(String, String)> {
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("OUTPUTS").await.unwrap();
    let stored = stream.info().await.unwrap().state.messages;
    let mut read = Vec::new();
    for sequence in 1..=stored {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let id = message.headers.get("Nats-Msg-Id").unwrap().to_string();
        read.push((id, String::from_utf8(message.payload.to_vec()).unwrap()));
    }
    read
}

/// `n` outputs for input `n`: `out.<n>` with payloads `n-0`, `n-1`, ...
fn fan_out(input: &Message) -> Vec<OutgoingMessage> {
    let n: u64 = std::str::from_utf8(input.payload())
        .unwrap()
        .parse()
        .unwrap();
    (0..n)
        .map(|i| OutgoingMessage::new(format!("out.{n}"), format!("{n}-{i}")))
        .collect()
}

fn serve<S>(consumer: &natty::Consumer, stack: S) -> (CancellationToken, JoinHandle<()>)
where
    S: Service<Message> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let shutdown = CancellationToken::new();
    let run = consumer.serve(shutdown.clone(), stack);
    (
        shutdown,
        tokio::spawn(async move {
            run.await.unwrap();
        }),
    )
}

async fn stop((shutdown, run): (CancellationToken, JoinHandle<()>)) {
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, run).await.unwrap().unwrap();
}

/// `processor` in a stack that sends the batch error kind of each failed call.
fn reporting_failures<S>(
    processor: Processor<S>,
) -> (
    impl Service<Message, Response = Processed, Error = BoxError, Future: Send> + Send + 'static,
    tokio::sync::mpsc::UnboundedReceiver<Option<BatchErrorKind>>,
)
where
    Processor<S>: Service<Message, Response = Processed, Error = BoxError> + Clone + Send + 'static,
    <Processor<S> as Service<Message>>::Future: Send,
{
    let (failed, failures) = tokio::sync::mpsc::unbounded_channel();
    let stack = service_fn(move |input: Message| {
        let mut processor = processor.clone();
        let failed = failed.clone();
        async move {
            let result = processor.ready().await?.call(input).await;
            if let Err(err) = &result {
                let _ = failed.send(err.downcast_ref::<BatchError>().map(BatchError::kind));
            }
            result
        }
    });
    (stack, failures)
}

/// Whether the server has atomic batches; without, checks that a processed input fails
/// `Unsupported`, stores nothing and stays unacked.
async fn has_atomic_batches(server: &Server, natty: &Natty) -> bool {
    if natty.server_info().supports_atomic_batch() {
        return true;
    }
    let handler = service_fn(|m: Message| async move { Ok::<_, BoxError>(fan_out(&m)) });
    let (stack, mut failures) = reporting_failures(Processor::new(natty.publisher(), handler));
    let running = serve(&consumer(natty, 1).await, stack);
    let kind = tokio::time::timeout(DEADLINE, failures.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kind, Some(BatchErrorKind::Unsupported));
    stop(running).await;
    assert!(outputs(server).await.is_empty());
    println!("nats-server {}: Unsupported", natty.server_info().version());
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_input_s_outputs_are_stored_once_all_together() {
    let server = Server::start().unwrap();
    let natty = inputs(&server, 30).await;
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    let handler = service_fn(|input: Message| async move { Ok::<_, BoxError>(fan_out(&input)) });
    let running = serve(
        &consumer(&natty, 5).await,
        Processor::new(natty.publisher(), handler),
    );
    wait_drained(&natty, "INPUTS", "processor").await;
    stop(running).await;

    let stored = outputs(&server).await;
    assert_eq!(stored.len(), (1..=30).sum::<usize>());
    let mut by_input: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (id, payload) in &stored {
        let (n, _) = payload.split_once('-').unwrap();
        let parts: Vec<_> = id.split(':').collect();
        assert_eq!(parts[..2], ["INPUTS", "processor"], "{id}");
        by_input
            .entry(n.parse().unwrap())
            .or_default()
            .push(payload.clone());
    }
    for (n, payloads) in by_input {
        let expected: Vec<_> = (0..n).map(|i| format!("{n}-{i}")).collect();
        assert_eq!(
            payloads, expected,
            "input {n}: all its outputs, once, in order"
        );
    }
}

/// What each call of a stack processed, with the delivery it was.
type Seen = Arc<Mutex<Vec<(u64, Processed)>>>;

/// A stack that makes the first delivery of each input fail *after* the processor stored its
/// outputs, as a process dying before its ack would; records what each call processed.
fn failing_after_storing<S>(
    processor: Processor<S>,
) -> (
    impl Service<Message, Response = (), Error = BoxError, Future: Send> + Send + 'static,
    Seen,
)
where
    Processor<S>: Service<Message, Response = Processed, Error = BoxError> + Clone + Send + 'static,
    <Processor<S> as Service<Message>>::Future: Send,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let stack = service_fn(move |input: Message| {
        let mut processor = processor.clone();
        let record = Arc::clone(&record);
        async move {
            let delivered = input.info().delivered;
            let processed = processor.ready().await?.call(input).await?;
            record.lock().unwrap().push((delivered, processed));
            if delivered == 1 {
                return Err::<(), BoxError>("died before the ack".into());
            }
            Ok(())
        }
    });
    (stack, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_back_after_its_outputs_were_stored_stores_nothing_again() {
    let server = Server::start().unwrap();
    let natty = inputs(&server, 3).await;
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    let handler = service_fn(|input: Message| async move { Ok::<_, BoxError>(fan_out(&input)) });
    let (stack, seen) = failing_after_storing(Processor::new(natty.publisher(), handler));
    let running = serve(&consumer(&natty, 5).await, stack);
    wait_drained(&natty, "INPUTS", "processor").await;
    stop(running).await;

    assert_eq!(outputs(&server).await.len(), 1 + 2 + 3, "each output once");
    let seen = seen.lock().unwrap();
    for (delivered, processed) in seen.iter() {
        match delivered {
            1 => assert!(matches!(processed, Processed::Stored(_)), "{processed:?}"),
            _ => assert_eq!(*processed, Processed::AlreadyStored),
        }
    }
    assert_eq!(seen.len(), 6, "each input twice: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_whose_outputs_change_keeps_those_of_the_first_stored_delivery() {
    let server = Server::start().unwrap();
    let natty = inputs(&server, 1).await;
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    // First delivery: a, b. Later ones: x, y, z (one more, and all different).
    let handler = service_fn(|input: Message| async move {
        let payloads: &[&str] = if input.info().delivered == 1 {
            &["a", "b"]
        } else {
            &["x", "y", "z"]
        };
        let outputs: Vec<_> = payloads
            .iter()
            .map(|p| OutgoingMessage::new("out.1", *p))
            .collect();
        Ok::<_, BoxError>(outputs)
    });
    let (stack, seen) = failing_after_storing(Processor::new(natty.publisher(), handler));
    let running = serve(&consumer(&natty, 5).await, stack);
    wait_drained(&natty, "INPUTS", "processor").await;
    stop(running).await;

    let payloads: Vec<_> = outputs(&server).await.into_iter().map(|(_, p)| p).collect();
    assert_eq!(payloads, ["a", "b"]);
    assert_eq!(seen.lock().unwrap()[1].1, Processed::AlreadyStored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_that_cannot_be_one_batch_are_never_stored() {
    let server = Server::start().unwrap();
    let natty = inputs(&server, 1).await;
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    let handler = service_fn(|_: Message| async move {
        Ok::<_, BoxError>((0..1_001).map(|i| OutgoingMessage::new("out.1", i.to_string())))
    });
    let (stack, mut failures) = reporting_failures(Processor::new(natty.publisher(), handler));
    let running = serve(&consumer(&natty, 2).await, stack);
    for _ in 0..2 {
        let kind = tokio::time::timeout(DEADLINE, failures.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kind, Some(BatchErrorKind::TooManyMessages));
    }
    stop(running).await;
    assert!(outputs(&server).await.is_empty());
}

/// Input `sequence` of `INPUTS` as the consumer `processor` would deliver it.
fn delivered(sequence: u64) -> Message {
    let mut info = natty::message::DeliveryInfo::new("INPUTS", "processor");
    info.stream_sequence = sequence;
    info.delivered = 1;
    let (message, _) = Message::builder(format!("in.{sequence}"), "2")
        .info(info)
        .build();
    message
}

#[tokio::test]
async fn inputs_committed_together_fall_back_to_their_own_batches_when_one_was_stored_before() {
    let server = Server::start().unwrap();
    let natty = inputs(&server, 1).await;
    if !has_atomic_batches(&server, &natty).await {
        return;
    }
    let handler = service_fn(|input: Message| async move { Ok::<_, BoxError>(fan_out(&input)) });
    let processor = Processor::new(natty.publisher(), handler);
    let first = processor.clone().oneshot(delivered(1)).await.unwrap();
    assert!(matches!(first, Processed::Stored(_)), "{first:?}");

    // On this current-thread runtime the three reach the committer before it runs, so they
    // go out as one batch; input 1's outputs are stored, so the server refuses it whole and
    // each goes alone.
    let together = [1, 2, 3].map(|n| processor.clone().oneshot(delivered(n)));
    let [again, two, three] = futures_util::future::join_all(together)
        .await
        .try_into()
        .unwrap();
    assert_eq!(again.unwrap(), Processed::AlreadyStored);
    for stored in [two.unwrap(), three.unwrap()] {
        let Processed::Stored(ack) = stored else {
            panic!("{stored:?}")
        };
        assert_eq!(ack.count(), 2);
    }
    let ids: std::collections::HashSet<_> = outputs(&server)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 6, "each input's 2 outputs once: {ids:?}");

    // Inputs never stored before are committed together, each told its own sequences.
    let together = [4, 5].map(|n| processor.clone().oneshot(delivered(n)));
    let acks: Vec<_> = futures_util::future::join_all(together)
        .await
        .into_iter()
        .map(|processed| match processed.unwrap() {
            Processed::Stored(ack) => ack.sequences(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(acks, [7..=8, 9..=10]);
    assert_eq!(
        batch_ids(&server, 7..=10).await,
        1,
        "inputs 4 and 5 went out as one batch"
    );
}

/// The `Nats-Batch-Id`s of `OUTPUTS`' messages `sequences`: one per batch they were stored in.
async fn batch_ids(server: &Server, sequences: std::ops::RangeInclusive<u64>) -> usize {
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("OUTPUTS")
        .await
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    for sequence in sequences {
        let message = stream.get_raw_message(sequence).await.unwrap();
        ids.insert(message.headers.get("Nats-Batch-Id").unwrap().to_string());
    }
    ids.len()
}

#[tokio::test]
async fn a_server_taking_fewer_messages_per_batch_gets_smaller_combined_batches() {
    // Servers before 2.12 know no batch limits and refuse the config: check on a plain one.
    let plain = Server::start().unwrap();
    if !has_atomic_batches(&plain, &inputs(&plain, 1).await).await {
        return;
    }
    drop(plain);
    let server = Server::builder()
        .config_snippet("jetstream { limits { batch { max_msgs: 10 } } }")
        .start()
        .unwrap();
    let natty = inputs(&server, 1).await;
    let handler = service_fn(|input: Message| async move { Ok::<_, BoxError>(fan_out(&input)) });
    let processor = Processor::new(natty.publisher(), handler);

    // On this current-thread runtime the inputs of a wave reach the committer before it runs.
    // Eight inputs of two outputs are 16 messages: the server refuses them as one batch, and
    // each input goes alone (eight batches).
    let wave = |from: u64| {
        let calls = (from..from + 8).map(|n| processor.clone().oneshot(delivered(n)));
        futures_util::future::join_all(calls)
    };
    for processed in wave(1).await {
        assert!(matches!(processed.unwrap(), Processed::Stored(_)));
    }
    assert_eq!(batch_ids(&server, 1..=16).await, 8, "each input alone");

    // The committer learned: the next wave goes out as two combined batches of four inputs
    // (8 messages each), not refused again.
    let mut sequences = Vec::new();
    for processed in wave(9).await {
        let Processed::Stored(ack) = processed.unwrap() else {
            panic!("stored")
        };
        sequences.push(ack.sequences());
    }
    let expected: Vec<_> = (0..8).map(|i| 17 + 2 * i..=18 + 2 * i).collect();
    assert_eq!(sequences, expected);
    assert_eq!(batch_ids(&server, 17..=32).await, 2, "two combined batches");
    assert_eq!(outputs(&server).await.len(), 32, "each output once");
}
