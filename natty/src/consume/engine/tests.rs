//! The engine's rules, offline: hand-built messages settle into a `Recorder`.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use natty_testkit::Logs;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tower::{service_fn, Service};

use super::{Engine, Event, Expiry, Finished, Outcome, Steady};
use crate::consume::{log_failure, HandlerFailure, PanicMessage};
use crate::error::{BoxError, ConsumeErrorKind};
use crate::message::{DeliveryInfo, Message, Recorder, Settlement};
use crate::report::ReportSender;

/// Far longer than anything here takes; a test that hits it has hung.
const DEADLINE: Duration = Duration::from_secs(5);

/// A group lane's tag, as a member's `Slot`: partition and stream sequence.
type Lane = (u32, u64);

/// A hand-built message of stream `ORDERS` with its sequence and delivery count.
fn message(subject: &str, stream_sequence: u64, delivered: u64) -> (Message, Recorder) {
    let mut info = DeliveryInfo::new("ORDERS", "billing");
    info.stream_sequence = stream_sequence;
    info.delivered = delivered;
    Message::builder(subject, "{}").info(info).build()
}

/// Start `message` on an engine whose service is ready now.
fn start_now<S, T>(engine: &mut Engine<S, T>, message: Message, tag: T, expiry: Option<Expiry>)
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    assert!(
        engine.ready_now().expect("poll_ready does not fail"),
        "the service is ready for a call"
    );
    engine.start(message, tag, expiry);
}

/// The next call to end, settled by the engine.
async fn next_finished<S, T>(engine: &mut Engine<S, T>) -> Finished<T>
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    let event = timeout(DEADLINE, engine.next_event(false))
        .await
        .expect("a call ends in time");
    let Event::Done(done) = event else {
        panic!("readiness was not asked for, so only a call can end")
    };
    engine.settle(done).await
}

/// Let spawned tasks (a nak sent on drop) run, so a test can tell "not yet" from "never".
async fn let_spawned_tasks_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// The one report in `errors`; fails if there are none or more.
fn only_report(errors: &mut mpsc::Receiver<HandlerFailure>) -> HandlerFailure {
    let failure = errors.try_recv().expect("a failure was reported");
    assert!(errors.try_recv().is_err(), "one report per failure");
    failure
}

/// The text of a `Panicked` report's source.
fn panic_text(failure: &HandlerFailure) -> String {
    failure
        .error
        .source()
        .and_then(|source| source.downcast_ref::<PanicMessage>())
        .map(|text| text.as_str().to_owned())
        .expect("a panic report's source is the panic's text")
}

/// A service that panics in `call` itself, before it builds a future (a synchronous parse
/// that fails).
struct PanicsInCall;

impl Service<Message> for PanicsInCall {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Message) -> Self::Future {
        panic!("cannot parse {}", message.subject())
    }
}

/// A stall watch moved by hand: steady while its epoch is the one a call started in, as a
/// member's `StallWatch` is.
#[derive(Default)]
struct Epochs(AtomicU64);

impl Epochs {
    fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn stall(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Steady for Epochs {
    fn steady_since(&self, epoch: u64) -> bool {
        self.current() == epoch
    }
}

/// A handler budget ending at `deadline`, from the epoch `epochs` is in now.
fn budget(epochs: &Arc<Epochs>, deadline: Instant) -> Expiry {
    let steady: Arc<dyn Steady> = Arc::clone(epochs) as Arc<dyn Steady>;
    Expiry::new(deadline, steady, epochs.current())
}

#[tokio::test]
async fn an_unsettled_message_is_acked_after_ok() {
    let mut engine = Engine::new(
        service_fn(|_: Message| async { Ok::<_, BoxError>(()) }),
        None,
    );
    let (msg, recorder) = message("orders.created", 1, 1);
    start_now(&mut engine, msg, (), None);
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.outcome, Outcome::Handled);
    assert_eq!(finished.settlement(), Some(Settlement::Ack));
    assert_eq!(recorder.settlements(), vec![Settlement::Ack]);
    assert_eq!(engine.tally().handled, 1);
    assert_eq!(engine.in_flight(), 0);
}

#[tokio::test]
async fn an_unsettled_message_is_nakd_after_err() {
    let mut engine = Engine::new(
        service_fn(|_: Message| async { Err::<(), BoxError>("boom".into()) }),
        None,
    );
    let (msg, recorder) = message("orders.created", 1, 1);
    start_now(&mut engine, msg, (), None);
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(finished.settlement(), Some(Settlement::Nak(None)));
    assert_eq!(recorder.settlements(), vec![Settlement::Nak(None)]);
    assert_eq!((engine.tally().failed, engine.tally().handled), (1, 0));
}

/// A call of `service` for `orders.created` (stream sequence 7) panics with `text`: its
/// message is nak'd once, the call counted and the panic reported with its text.
async fn assert_panic_caught<S>(service: S, text: &str)
where
    S: Service<Message>,
    S::Error: Into<BoxError>,
{
    let (tx, mut errors) = mpsc::channel(8);
    let mut engine = Engine::new(service, Some(ReportSender::new(tx)));
    let (msg, recorder) = message("orders.created", 7, 1);
    start_now(&mut engine, msg, (), None);
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.outcome, Outcome::Panicked);
    assert_eq!(recorder.settlements(), vec![Settlement::Nak(None)]);
    assert_eq!(engine.tally().panicked, 1);
    let failure = only_report(&mut errors);
    assert_eq!(failure.error.kind(), ConsumeErrorKind::Panicked);
    assert_eq!(panic_text(&failure), text);
}

#[tokio::test]
async fn a_panic_in_call_itself_is_caught_nakd_and_reported() {
    assert_panic_caught(PanicsInCall, "cannot parse orders.created").await;
}

#[tokio::test]
async fn a_panic_in_the_future_is_caught_nakd_and_reported() {
    let service = service_fn(|msg: Message| async move {
        tokio::task::yield_now().await;
        if msg.info().delivered == 1 {
            panic!("poison at {}", msg.info().stream_sequence);
        }
        Ok::<_, BoxError>(())
    });
    assert_panic_caught(service, "poison at 7").await;
}

#[tokio::test]
async fn a_message_the_handler_settled_is_not_settled_again() {
    // What the handler does, by payload, and what it returns.
    let service = service_fn(|msg: Message| async move {
        match msg.payload().as_ref() {
            b"term, ok" => msg.term().await?,
            b"term, err" => {
                msg.term().await?;
                return Err("gave up".into());
            }
            b"nak later, err" => {
                msg.nak(Some(Duration::from_secs(3))).await?;
                return Err("try later".into());
            }
            b"ack, panic" => {
                msg.ack().await?;
                panic!("after the ack");
            }
            b"in progress, ok" => msg.in_progress().await?,
            other => unreachable!("no case {other:?}"),
        }
        Ok::<_, BoxError>(())
    });
    let mut engine = Engine::new(service, None);
    let cases = [
        ("term, ok", Outcome::Handled, vec![Settlement::Term]),
        ("term, err", Outcome::Failed, vec![Settlement::Term]),
        (
            "nak later, err",
            Outcome::Failed,
            vec![Settlement::Nak(Some(Duration::from_secs(3)))],
        ),
        ("ack, panic", Outcome::Panicked, vec![Settlement::Ack]),
        // Not final: the engine still acks.
        (
            "in progress, ok",
            Outcome::Handled,
            vec![Settlement::InProgress, Settlement::Ack],
        ),
    ];
    for (case, outcome, settlements) in cases {
        let (msg, recorder) = Message::builder("orders.created", case).build();
        start_now(&mut engine, msg, case, None);
        let finished = next_finished(&mut engine).await;
        assert_eq!(finished.tag, case);
        assert_eq!(finished.outcome, outcome, "{case}");
        assert_eq!(recorder.settlements(), settlements, "{case}");
        assert_eq!(
            finished.settlement(),
            recorder.outcome(),
            "{case}: the driver learns the handler's settlement"
        );
    }
}

/// What a dead-letter layer under a report layer does: terms a message its inner service failed
/// on, and reports the failure (logging it) before the engine sees it.
#[derive(Clone)]
struct TermsFailures<S>(S);

impl<S> Service<Message> for TermsFailures<S>
where
    S: Service<Message, Response = (), Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> Self::Future {
        let original = msg.clone();
        let inner = self.0.call(msg);
        Box::pin(async move {
            let result = inner.await;
            if let Err(err) = &result {
                log_failure(
                    original.acker(),
                    &HandlerFailure::new(&original, err.to_string()),
                );
                original.term().await?;
            }
            result
        })
    }
}

#[tokio::test]
async fn a_message_a_layer_settled_is_not_settled_again_and_its_failure_is_logged_once() {
    let (logged, _capture) = Logs::capture();
    let (tx, mut errors) = mpsc::channel(8);
    let inner = service_fn(|_: Message| async { Err::<(), BoxError>("no such order".into()) });
    let mut engine = Engine::new(TermsFailures(inner), Some(ReportSender::new(tx)));
    let (msg, recorder) = message("orders.created", 3, 1);
    start_now(&mut engine, msg, (), None);
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.outcome, Outcome::Failed);
    assert_eq!(recorder.settlements(), vec![Settlement::Term]);
    assert_eq!(finished.settlement(), Some(Settlement::Term));
    let failure = only_report(&mut errors);
    assert_eq!(failure.error.kind(), ConsumeErrorKind::Handler);
    let warnings = logged.lines("WARN", "message handler failed");
    assert_eq!(warnings.len(), 1, "logged once, by the layer: {warnings:?}");
    assert!(warnings[0].contains("no such order"), "{}", warnings[0]);
    assert_eq!(
        logged.lines("DEBUG", "reported again").len(),
        1,
        "the engine saw it too, and stayed at DEBUG"
    );
}

#[tokio::test]
async fn failing_and_panicking_calls_each_report_once_with_their_message() {
    let (logged, _capture) = Logs::capture();
    let (tx, mut errors) = mpsc::channel(8);
    let service = service_fn(|msg: Message| async move {
        match msg.subject() {
            "orders.failing" => Err::<(), BoxError>("no stock".into()),
            "orders.panicking" => panic!("poison"),
            _ => Ok(()),
        }
    });
    let mut engine = Engine::new(service, Some(ReportSender::new(tx)));
    for (subject, seq, delivered) in [
        ("orders.failing", 11, 1),
        ("orders.panicking", 12, 3),
        ("orders.fine", 13, 1),
    ] {
        let (msg, _recorder) = message(subject, seq, delivered);
        start_now(&mut engine, msg, (), None);
    }
    for _ in 0..3 {
        next_finished(&mut engine).await;
    }
    let mut reports = Vec::new();
    while let Ok(failure) = errors.try_recv() {
        reports.push(failure);
    }
    reports.sort_by_key(|failure| failure.stream_sequence);
    let seen: Vec<_> = reports
        .iter()
        .map(|f| {
            (
                f.subject.as_str(),
                f.stream_sequence,
                f.delivered,
                f.error.kind(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("orders.failing", 11, 1, ConsumeErrorKind::Handler),
            ("orders.panicking", 12, 3, ConsumeErrorKind::Panicked),
        ],
        "one report per failure, none for the handled call"
    );
    let handler_error = reports[0].error.source().map(ToString::to_string);
    assert_eq!(handler_error.as_deref(), Some("no stock"));
    assert_eq!(panic_text(&reports[1]), "poison");
    assert!(
        reports
            .iter()
            .all(|f| f.stream == "ORDERS" && f.consumer == "billing"),
        "the report names the stream and consumer"
    );
    let warnings = logged.lines("WARN", "message handler failed");
    assert_eq!(warnings.len(), 2, "no layer logged them: {warnings:?}");
    for text in ["no stock", "poison"] {
        assert!(warnings.iter().any(|line| line.contains(text)), "{text}");
    }
    let tally = engine.tally();
    assert_eq!(
        (
            tally.handled,
            tally.failed,
            tally.panicked,
            tally.dropped_reports
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn a_report_carries_the_message_id_delivered() {
    let (tx, mut errors) = mpsc::channel(8);
    let service = service_fn(|_: Message| async { Err::<(), BoxError>("boom".into()) });
    let mut engine = Engine::new(service, Some(ReportSender::new(tx)));
    let (msg, _recorder) = Message::builder("orders.created", "{}")
        .header("Nats-Msg-Id", "order-17")
        .build();
    start_now(&mut engine, msg, (), None);
    next_finished(&mut engine).await;
    assert_eq!(
        only_report(&mut errors).message_id.as_deref(),
        Some("order-17")
    );
}

#[tokio::test]
async fn a_full_lossy_report_channel_counts_the_dropped_report() {
    let (tx, mut errors) = mpsc::channel(1);
    let lossy = ReportSender::lossy(tx);
    let service = service_fn(|_: Message| async { Err::<(), BoxError>("boom".into()) });
    let mut engine = Engine::new(service, Some(lossy.clone()));
    let mut recorders = Vec::new();
    for seq in 1..=2 {
        let (msg, recorder) = message("orders.created", seq, 1);
        recorders.push(recorder);
        start_now(&mut engine, msg, (), None);
        // One at a time: the second report meets the first in the full channel.
        timeout(DEADLINE, next_finished(&mut engine))
            .await
            .expect("a lossy sender never waits for room");
    }
    assert_eq!(engine.tally().dropped_reports, 1);
    assert_eq!(lossy.dropped(), 1);
    assert_eq!(only_report(&mut errors).stream_sequence, 1);
    for recorder in recorders {
        assert_eq!(
            recorder.settlements(),
            vec![Settlement::Nak(None)],
            "a dropped report does not change the settlement"
        );
    }
}

#[tokio::test]
async fn a_service_that_waits_for_its_call_to_finish_is_made_ready_by_next_event() {
    // One call at a time: `poll_ready` is pending until the call under way has ended, and the
    // call ends only when it is polled (it yields first).
    let service = tower::limit::ConcurrencyLimit::new(
        service_fn(|_: Message| async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            Ok::<_, BoxError>(())
        }),
        1,
    );
    let mut engine = Engine::new(service, None);
    let mut recorders = Vec::new();
    for seq in 1..=3 {
        let (msg, recorder) = message("orders.created", seq, 1);
        recorders.push(recorder);
        let event = timeout(DEADLINE, engine.next_event(true))
            .await
            .expect("no deadlock: the service becomes ready");
        assert!(matches!(event, Event::Ready), "nothing in flight yet");
        engine.start(msg, seq, None);
        assert!(
            !engine.ready_now().unwrap(),
            "the limit holds the next call back while this one runs"
        );
        // The driver asks for readiness while the call runs: the call must be polled.
        let event = timeout(DEADLINE, engine.next_event(true))
            .await
            .expect("no deadlock: the call is polled while readiness is awaited");
        let Event::Done(done) = event else {
            panic!("the service cannot be ready before its call ended")
        };
        let finished = engine.settle(done).await;
        assert_eq!((finished.tag, finished.outcome), (seq, Outcome::Handled));
    }
    assert_eq!(engine.tally().handled, 3);
    for recorder in recorders {
        assert_eq!(recorder.settlements(), vec![Settlement::Ack]);
    }
}

#[tokio::test]
async fn lane_calls_within_their_budget_settle_and_hand_back_their_tags() {
    let epochs = Arc::new(Epochs::default());
    let service = service_fn(|msg: Message| async move {
        match msg.info().stream_sequence {
            1 => Ok::<_, BoxError>(()),
            _ => Err("not yet".into()),
        }
    });
    let mut engine: Engine<_, Lane> = Engine::new(service, None);
    let deadline = Instant::now() + DEADLINE * 2;
    let mut recorders = Vec::new();
    for (partition, seq) in [(0, 1), (1, 2)] {
        let (msg, recorder) = message("ord.k0", seq, 1);
        recorders.push(recorder);
        start_now(
            &mut engine,
            msg,
            (partition, seq),
            Some(budget(&epochs, deadline)),
        );
    }
    let mut ends = Vec::new();
    for _ in 0..2 {
        let finished = next_finished(&mut engine).await;
        ends.push((finished.tag, finished.outcome, finished.settlement()));
    }
    ends.sort_by_key(|(tag, _, _)| *tag);
    assert_eq!(
        ends,
        vec![
            ((0, 1), Outcome::Handled, Some(Settlement::Ack)),
            ((1, 2), Outcome::Failed, Some(Settlement::Nak(None))),
        ]
    );
    assert_eq!(recorders[0].settlements(), vec![Settlement::Ack]);
    assert_eq!(recorders[1].settlements(), vec![Settlement::Nak(None)]);
}

#[tokio::test]
async fn a_lane_call_past_its_deadline_expires_unsettled_and_counts_cancelled() {
    let (tx, mut errors) = mpsc::channel(8);
    let epochs = Arc::new(Epochs::default());
    let service = service_fn(|_: Message| std::future::pending::<Result<(), BoxError>>());
    let mut engine: Engine<_, Lane> = Engine::new(service, Some(ReportSender::new(tx)));
    let (msg, recorder) = message("ord.k0", 4, 1);
    // The deadline wakes the call that waits forever.
    let deadline = Instant::now() + Duration::from_millis(50);
    start_now(&mut engine, msg, (0, 4), Some(budget(&epochs, deadline)));
    let finished = next_finished(&mut engine).await;
    assert!(Instant::now() >= deadline, "not before its deadline");
    assert_eq!(finished.tag, (0, 4));
    assert_eq!(finished.outcome, Outcome::Expired);
    assert_eq!(finished.settlement(), None);
    let_spawned_tasks_run().await;
    assert_eq!(
        recorder.settlements(),
        Vec::<Settlement>::new(),
        "left to the server's ack wait"
    );
    assert!(
        errors.try_recv().is_err(),
        "running out of time is no failure"
    );
    let tally = engine.tally();
    assert_eq!(
        (tally.cancelled, tally.handled, tally.failed, tally.panicked),
        (1, 0, 0, 0)
    );
}

#[tokio::test]
async fn a_lane_call_is_not_polled_again_after_a_stall() {
    let epochs = Arc::new(Epochs::default());
    let (go, wait) = oneshot::channel::<()>();
    let wait = Arc::new(std::sync::Mutex::new(Some(wait)));
    let went_on = Arc::new(AtomicBool::new(false));
    let service = {
        let went_on = Arc::clone(&went_on);
        service_fn(move |_: Message| {
            let wait = wait.lock().unwrap().take().expect("one call");
            let went_on = Arc::clone(&went_on);
            async move {
                let _ = wait.await;
                went_on.store(true, Ordering::SeqCst);
                Ok::<_, BoxError>(())
            }
        })
    };
    let mut engine: Engine<_, Lane> = Engine::new(service, None);
    let (msg, recorder) = message("ord.k0", 5, 1);
    let deadline = Instant::now() + DEADLINE * 2;
    start_now(&mut engine, msg, (2, 5), Some(budget(&epochs, deadline)));
    assert!(engine.try_done().is_none(), "the call waits for `go`");
    // A stall, then the call is woken: the engine must not poll it on.
    epochs.stall();
    go.send(()).unwrap();
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.tag, (2, 5));
    assert_eq!(finished.outcome, Outcome::Expired);
    assert!(
        !went_on.load(Ordering::SeqCst),
        "the handler went on after the stall"
    );
    let_spawned_tasks_run().await;
    assert_eq!(recorder.settlements(), Vec::<Settlement>::new());
    assert_eq!(engine.tally().cancelled, 1);
}

#[tokio::test]
async fn drain_settles_what_ends_in_the_grace_and_hands_back_the_rest_unsettled() {
    let epochs = Arc::new(Epochs::default());
    let service = service_fn(|msg: Message| async move {
        if msg.info().stream_sequence == 2 {
            std::future::pending::<()>().await;
        }
        Ok::<_, BoxError>(())
    });
    let mut engine: Engine<_, Lane> = Engine::new(service, None);
    let deadline = Instant::now() + DEADLINE * 2;
    let (quick, quick_recorder) = message("ord.k0", 1, 1);
    let (stuck, stuck_recorder) = message("ord.k1", 2, 1);
    start_now(&mut engine, quick, (0, 1), Some(budget(&epochs, deadline)));
    start_now(&mut engine, stuck, (1, 2), Some(budget(&epochs, deadline)));
    let (finished, cancelled) = timeout(DEADLINE, engine.drain(Duration::from_millis(200)))
        .await
        .expect("drain ends with its grace");
    let finished: Vec<_> = finished.into_iter().map(|f| (f.tag, f.outcome)).collect();
    assert_eq!(finished, vec![((0, 1), Outcome::Handled)]);
    assert_eq!(quick_recorder.settlements(), vec![Settlement::Ack]);
    let [(tag, acker)] = cancelled.as_slice() else {
        panic!("one call cut off, got {}", cancelled.len())
    };
    assert_eq!(*tag, (1, 2));
    assert!(!acker.is_settled(), "handed back for the driver to settle");
    let_spawned_tasks_run().await;
    assert_eq!(
        stuck_recorder.settlements(),
        Vec::<Settlement>::new(),
        "dropping the cut-off call sends nothing"
    );
    assert_eq!(engine.in_flight(), 0);
    let tally = engine.tally();
    assert_eq!((tally.handled, tally.cancelled), (1, 1));
}

#[tokio::test]
async fn dropping_the_engine_naks_its_calls_in_flight() {
    let epochs = Arc::new(Epochs::default());
    let service = service_fn(|_: Message| std::future::pending::<Result<(), BoxError>>());
    let mut engine: Engine<_, Lane> = Engine::new(service, None);
    let (plain, plain_recorder) = message("ord.k0", 1, 1);
    let (lane, lane_recorder) = message("ord.k1", 2, 1);
    start_now(&mut engine, plain, (0, 1), None);
    let deadline = Instant::now() + DEADLINE * 2;
    start_now(&mut engine, lane, (1, 2), Some(budget(&epochs, deadline)));
    assert!(engine.try_done().is_none(), "both calls are under way");
    drop(engine);
    // The nak is spawned, so it arrives a moment after the drop.
    timeout(DEADLINE, async {
        while plain_recorder.outcome().is_none() || lane_recorder.outcome().is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("both calls' messages nak'd after the drop");
    let_spawned_tasks_run().await;
    assert_eq!(plain_recorder.settlements(), vec![Settlement::Nak(None)]);
    assert_eq!(lane_recorder.settlements(), vec![Settlement::Nak(None)]);
}

#[tokio::test]
async fn a_panic_in_call_is_reported_even_when_the_lane_call_stalled_before_its_first_poll() {
    let epochs = Arc::new(Epochs::default());
    let (tx, mut errors) = mpsc::channel(8);
    let mut engine: Engine<_, Lane> = Engine::new(PanicsInCall, Some(ReportSender::new(tx)));
    let (msg, recorder) = message("ord.k0", 9, 1);
    start_now(
        &mut engine,
        msg,
        (0, 9),
        Some(budget(&epochs, Instant::now() + DEADLINE)),
    );
    // `call` has run (and panicked); a stall before the first poll must not hide that.
    epochs.stall();
    let finished = next_finished(&mut engine).await;
    assert_eq!(finished.outcome, Outcome::Panicked);
    assert_eq!(recorder.settlements(), vec![Settlement::Nak(None)]);
    assert_eq!(
        only_report(&mut errors).error.kind(),
        ConsumeErrorKind::Panicked
    );
    assert_eq!((engine.tally().panicked, engine.tally().cancelled), (1, 0));
}
