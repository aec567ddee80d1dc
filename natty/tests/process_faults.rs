//! A processor in a real process (this binary run again as a child), SIGKILLed at random
//! points while it turns 10,000 inputs (20,000 in the long form) into 1–5 outputs each, and
//! in one run its connection cut mid-processing (cut until the server has closed it,
//! restored, then the child killed too); successive children share the durable consumer
//! `processor`, and a last one runs until the consumer is drained. A plain async-nats reader
//! then finds, for every input, all of its outputs exactly once: no `(input, index)` twice,
//! no input with only part of its outputs, none of an input that does not exist, and the
//! total is the expected sum.
//!
//! Each child says, as it happens, when it starts an input and what came of it: stored,
//! found stored already (`Duplicate`: a killed child's batch was stored but its input never
//! acked), or failed and why. Kills land while inputs are in the processor: each waits until
//! the child has stored a random number of inputs and has inputs started and not finished,
//! and what it said up to its death gives the inputs it held; the parent prints what became
//! of them. The cut waits until the server has closed the child's connection before it is
//! restored. Observed on 2.15.1: of the inputs a kill catches in the processor, some find
//! their outputs stored when they come back (the batch was committed, the ack never sent) and
//! the others are stored by a later delivery (the kill came before the commit); a cut is
//! mostly absorbed by the client's reconnect (a late answer reaches the new connection),
//! sometimes loses commit answers (`TimedOut`, then found stored), and once cut a batch short
//! (`Incomplete`, then stored by a redelivery).
//!
//! `NATTY_PROCESS_FAULTS_INPUTS` sets the number of inputs (default 20,000),
//! `NATTY_PROCESS_FAULTS_SEED` the seed of the kill points (default: from the clock; printed).
//! On a server without atomic batches (before 2.12.1) the test does not apply: it says so and
//! passes (the `process` tests check `Unsupported` there).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use natty::process::{Processed, Processor};
use natty::OutgoingMessage;
use natty::{
    BatchError, BoxError, CancellationToken, Config, ConsumeConfig, ConsumerOptions, Message,
};
use natty_testkit::{Proxy, Server};
use tokio::time::timeout;
use tower::{Service, ServiceExt};

mod common;
use common::child::{self, parent_gone, say};
use common::consume::consumer_info;
use common::{connect, connect_with};

const URL_VAR: &str = "NATTY_PROCESS_FAULTS_URL";
const RUN_VAR: &str = "NATTY_PROCESS_FAULTS_RUN";
const INPUTS_VAR: &str = "NATTY_PROCESS_FAULTS_INPUTS";
const SEED_VAR: &str = "NATTY_PROCESS_FAULTS_SEED";
/// 20,000 inputs take a few seconds on a 2-core machine (inputs processed together are
/// committed as one batch).
const DEFAULT_INPUTS: u64 = 20_000;
const CONSUMER: &str = "processor";
/// Children SIGKILLed, each at a random point; the connection of one of them is cut first.
const KILLS: usize = 5;
/// The run (0-based) whose connection is cut mid-processing, and restored, before its kill.
const CUT_RUN: usize = 2;
/// How long the server waits for an input's ack before delivering it again.
const ACK_WAIT: Duration = Duration::from_secs(2);
const CONCURRENCY: usize = 32;
/// The longest any single wait of the test may take (a child's start, a growth, a stop).
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the last child may take to drain the consumer (about 40 s on an idle 2-core
/// machine, 70 s on a busy one).
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if let Ok(url) = std::env::var(URL_VAR) {
        let run = std::env::var(RUN_VAR).expect("the run");
        return processor_main(url, &run);
    }
    child::run_test(
        "process_faults",
        killed_processors_store_every_input_s_outputs_once_and_whole(),
    );
}

/// Input `n`'s outputs: `1 + n % 5` of them, output `i` on `out.<n % 64>` with payload `n-i`.
fn outputs_of(n: u64) -> u64 {
    1 + n % 5
}

fn fan_out(input: &Message) -> Result<Vec<OutgoingMessage>, BoxError> {
    let n: u64 = std::str::from_utf8(input.payload())?.parse()?;
    Ok((0..outputs_of(n))
        .map(|i| OutgoingMessage::new(format!("out.{}", n % 64), format!("{n}-{i}")))
        .collect())
}

/// The durable both parent and children use (the children find it created).
fn consume_config() -> ConsumeConfig {
    let options = ConsumerOptions::default()
        .ack_wait(ACK_WAIT)
        .max_deliver(-1);
    ConsumeConfig::new("INPUTS", CONSUMER)
        .consumer_options(options)
        .concurrency(CONCURRENCY)
        .fetch_size(CONCURRENCY)
        .shutdown_grace(Duration::from_secs(5))
}

// ---------------------------------------------------------------------------------------------
// A child: serves a `Processor` over the durable; prints `ready` once serving and `stopped
// handled <n> failed <n>` after a clean stop, which it makes when its stdin closes.

fn processor_main(url: String, run: &str) {
    child::runtime().block_on(async move {
        // Named, so the parent sees when the server has dropped the connection. A batch whose
        // commit's answer is lost fails `TimedOut` after 1 s (instead of 5 s) and its input
        // is nak'd; so does one the server answers later than that (it happens on a busy
        // machine), and its input comes back to find its outputs stored.
        let config = Config::new([url])
            .name(child_name(run))
            .request_timeout(Duration::from_secs(1));
        let natty = connect_with(config).await;
        let consumer = natty
            .consumer(consume_config())
            .await
            .expect("the consumer");
        let handler = tower::service_fn(|input: Message| async move { fan_out(&input) });
        let processor = Processor::new(natty.publisher(), handler);
        // Says when it starts each input and what came of it, as it happens: the child may be
        // killed any moment.
        let stack = tower::service_fn(move |input: Message| {
            let mut processor = processor.clone();
            async move {
                let sequence = input.info().stream_sequence;
                say(&format!("start {sequence}"));
                let result = processor.ready().await?.call(input).await;
                match &result {
                    Ok(Processed::AlreadyStored) => say(&format!("already-stored {sequence}")),
                    Ok(_) => say(&format!("stored {sequence}")),
                    Err(err) => {
                        let why = match err.downcast_ref::<BatchError>() {
                            Some(err) => format!("{:?}", err.kind()),
                            None => err.to_string(),
                        };
                        say(&format!("failed {sequence} {why}"));
                    }
                }
                result
            }
        });
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(consumer.serve(shutdown.clone(), stack));
        say("ready");
        parent_gone().await;
        shutdown.cancel();
        let summary = serving
            .await
            .expect("the run does not panic")
            .expect("the run ends cleanly");
        say(&format!(
            "stopped handled {} failed {}",
            summary.handled, summary.failed
        ));
    });
}

fn child_name(run: impl std::fmt::Display) -> String {
    format!("processor-{run}")
}

// ---------------------------------------------------------------------------------------------
// The parent's handle on a child.

struct Child {
    run: usize,
    child: child::Child,
    tally: Tally,
}

/// What a child said of its inputs.
#[derive(Debug, Default)]
struct Tally {
    /// Inputs started and not finished (by stream sequence).
    in_flight: BTreeSet<u64>,
    /// Inputs whose outputs it stored, with how often it said so for each.
    stored: BTreeMap<u64, u32>,
    /// Inputs whose outputs an earlier delivery had stored (the batch answered `Duplicate`).
    already_stored: BTreeSet<u64>,
    /// Failed inputs by what failed them (a batch error's kind, or another error's text).
    failed: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, run: usize, line: &str) {
        let mut words = line.splitn(3, ' ');
        let (word, sequence, why) = (words.next(), words.next(), words.next());
        let Some(sequence) = sequence.and_then(|s| s.parse::<u64>().ok()) else {
            return println!("child {run}: {line}");
        };
        match (word, why) {
            (Some("start"), None) => {
                self.in_flight.insert(sequence);
                return;
            }
            (Some("stored"), None) => *self.stored.entry(sequence).or_default() += 1,
            (Some("already-stored"), None) => {
                self.already_stored.insert(sequence);
            }
            (Some("failed"), Some(why)) => *self.failed.entry(why.to_owned()).or_default() += 1,
            _ => return println!("child {run}: {line}"),
        }
        self.in_flight.remove(&sequence);
    }

    fn merge(&mut self, other: Tally) {
        for (sequence, times) in other.stored {
            *self.stored.entry(sequence).or_default() += times;
        }
        self.already_stored.extend(other.already_stored);
        for (kind, count) in other.failed {
            *self.failed.entry(kind).or_default() += count;
        }
    }
}

impl Child {
    /// Start child `run`, connecting to `url`, and wait until it serves.
    async fn spawn(url: &str, run: usize) -> Self {
        let envs = [(URL_VAR, url.to_owned()), (RUN_VAR, run.to_string())];
        let mut child = Self {
            run,
            child: child::Child::spawn(format!("child {run}"), &envs),
            tally: Tally::default(),
        };
        child.next_line("ready").await;
        child
    }

    /// The rest of the next line that starts with `word`, tallying any other line.
    async fn next_line(&mut self, word: &str) -> String {
        let (run, tally) = (self.run, &mut self.tally);
        self.child
            .next_line(word, |line| tally.add(run, line))
            .await
    }

    /// Wait until what it has said meets `done`, checked on all it has said so far (not on
    /// a line it has long gone past).
    async fn wait_until(&mut self, what: &str, done: impl Fn(&Tally) -> bool) {
        let met = timeout(DEADLINE, async {
            loop {
                while let Ok(line) = self.child.lines.try_recv() {
                    self.tally.add(self.run, &line);
                }
                if done(&self.tally) {
                    return;
                }
                match self.child.lines.recv().await {
                    Some(line) => self.tally.add(self.run, &line),
                    None => panic!("child {} exited", self.run),
                }
            }
        })
        .await;
        met.unwrap_or_else(|_| panic!("child {}: not {what} within {DEADLINE:?}", self.run));
    }

    /// Kill it with SIGKILL; returns what it said of its inputs until then, its
    /// `in_flight` those it had in its processor when it died.
    async fn kill(mut self) -> Tally {
        self.child.process.kill();
        // Its stdout is closed now: read what it said to the end.
        let (run, tally) = (self.run, &mut self.tally);
        self.child.read_to_end(|line| tally.add(run, line)).await;
        self.tally
    }

    /// Close its stdin and wait until it has stopped cleanly; returns its `stopped` line and
    /// what it said of its inputs.
    async fn stop(mut self) -> (String, Tally) {
        drop(self.child.stdin.take());
        let stopped = self.next_line("stopped").await;
        let status = tokio::task::block_in_place(|| self.child.process.wait_timeout(DEADLINE))
            .expect("wait");
        assert!(
            status.is_some_and(|s| s.success()),
            "child {} exits cleanly: {status:?}",
            self.run
        );
        (stopped, self.tally)
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Messages stored in `stream`, as stream info says.
async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut handle = js.get_stream(stream).await.expect("stream");
    handle.info().await.expect("stream info").state.messages
}

/// Whether the server has a connection named `name`.
fn connected(server: &Server, name: &str) -> bool {
    let connz =
        tokio::task::block_in_place(|| server.monitoring("/connz?limit=1000")).expect("connz");
    let connz: serde_json::Value = serde_json::from_str(&connz).expect("connz json");
    connz["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .any(|c| c["name"] == name)
}

/// Wait until the server has no connection named `name`.
async fn wait_disconnected(server: &Server, name: &str) {
    let gone = timeout(DEADLINE, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(2));
        loop {
            ticks.tick().await;
            if !connected(server, name) {
                return;
            }
        }
    })
    .await;
    gone.unwrap_or_else(|_| panic!("the server still has {name}'s connection after {DEADLINE:?}"));
}

async fn killed_processors_store_every_input_s_outputs_once_and_whole() {
    let started = Instant::now();
    let server = Server::start().expect("server");
    let natty = connect(&server).await;
    if !natty.server_info().supports_atomic_batch() {
        println!(
            "nats-server {}: no atomic batches, so no processor; does not apply (the \
             `process` tests check `Unsupported`)",
            natty.server_info().version()
        );
        return;
    }
    let inputs: u64 = std::env::var(INPUTS_VAR)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_INPUTS);
    let seed: u64 = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock");
            since.as_secs() ^ u64::from(since.subsec_nanos())
        });
    println!("{SEED_VAR}={seed} {INPUTS_VAR}={inputs}");
    let mut rng = fastrand::Rng::with_seed(seed);

    natty
        .stream("INPUTS")
        .unwrap()
        .create(["in.>"])
        .await
        .expect("INPUTS");
    natty
        .stream("OUTPUTS")
        .unwrap()
        .create(["out.>"])
        .await
        .expect("OUTPUTS");
    // Through the queued publisher: 20,000 inputs in a fraction of a second.
    let publisher = natty.publisher();
    for n in 1..=inputs {
        publisher
            .publish(&format!("in.{}", n % 16), n.to_string())
            .await
            .expect("input queued");
    }
    timeout(DEADLINE, publisher.flush())
        .await
        .expect("inputs flushed");
    let js = natty.jetstream().clone();
    assert_eq!(stored(&js, "INPUTS").await, inputs, "every input stored");
    let expected: u64 = (1..=inputs).map(outputs_of).sum();
    println!(
        "{inputs} inputs stored in {:.1} s; {expected} outputs expected",
        started.elapsed().as_secs_f64()
    );
    // Created here, so every child finds the same durable.
    natty
        .consumer(consume_config())
        .await
        .expect("the consumer");

    let proxy = Proxy::start(server.addr()).expect("proxy");
    // Kill points, by what the child says: each child has stored a random 1/120 to 1/10 of
    // the inputs (the cut one 1/240 to 1/24 before the cut and 1/120 after it) and has inputs
    // in its processor; a little over half of the inputs in all, so every kill lands while
    // work is left.
    let step = (inputs / 120).max(1);
    let processing = Instant::now();
    let mut tally = Tally::default();
    // The inputs a child had in its processor when it was killed.
    let mut killed_in_flight = BTreeSet::new();
    for run in 0..KILLS {
        let mut child = Child::spawn(&proxy.url(), run).await;
        if run == CUT_RUN {
            let cut_after = rng.u64(step / 2..step * 5);
            child
                .wait_until("storing", |t| t.stored.len() as u64 >= cut_after)
                .await;
            assert!(
                connected(&server, &child_name(run)),
                "the child is connected"
            );
            proxy.cut();
            let cut_at = stored(&js, "OUTPUTS").await;
            // Restored once the server has closed the child's connection: whatever of a
            // batch it had not received by then, it never will on that connection.
            wait_disconnected(&server, &child_name(run)).await;
            proxy.restore();
            // The child reconnects and stores again.
            let again = child.tally.stored.len() as u64 + step;
            child
                .wait_until("storing after the cut", |t| t.stored.len() as u64 >= again)
                .await;
            println!(
                "run {run}: cut at {cut_at} outputs after storing {cut_after} inputs, storing \
                 again ({:.1} s)",
                processing.elapsed().as_secs_f64()
            );
        }
        let kill_after = child.tally.stored.len() as u64 + rng.u64(step..step * 12);
        child
            .wait_until("storing", |t| t.stored.len() as u64 >= kill_after)
            .await;
        child.wait_until("busy", |t| !t.in_flight.is_empty()).await;
        let mut said = child.kill().await;
        let at = stored(&js, "OUTPUTS").await;
        let dying = std::mem::take(&mut said.in_flight);
        println!(
            "run {run}: SIGKILL at {at} outputs ({:.1} s) with {} inputs in its processor; it \
             stored {}, found {} stored already, failed {:?}",
            processing.elapsed().as_secs_f64(),
            dying.len(),
            said.stored.len(),
            said.already_stored.len(),
            said.failed
        );
        assert!(at < expected, "killed before the work was done");
        killed_in_flight.extend(dying);
        tally.merge(said);
    }
    assert!(
        !killed_in_flight.is_empty(),
        "the kills landed while inputs were being processed"
    );

    // The last child runs to the end.
    let last = Child::spawn(&proxy.url(), KILLS).await;
    let drained = timeout(DRAIN_DEADLINE, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        loop {
            ticks.tick().await;
            let info = consumer_info(&natty, "INPUTS", CONSUMER).await;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return info;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the consumer is not drained within {DRAIN_DEADLINE:?}"));
    let processed_in = processing.elapsed();
    let (stopped, said) = last.stop().await;
    println!(
        "last child: {stopped}; it stored {}, found {} stored already, failed {:?}",
        said.stored.len(),
        said.already_stored.len(),
        said.failed
    );
    assert!(
        said.in_flight.is_empty(),
        "the last child finished every input"
    );
    tally.merge(said);

    // A plain client reads OUTPUTS whole, through an ordered consumer.
    let reading = Instant::now();
    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let plain = jetstream::new(client);
    let total = stored(&plain, "OUTPUTS").await;
    let mut messages = plain
        .get_stream("OUTPUTS")
        .await
        .expect("OUTPUTS")
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer")
        .messages()
        .await
        .expect("messages");
    // Input `n`: its stream sequence (from the ids) and the indexes of its outputs, each
    // with how often it was read.
    let mut sequence_of: HashMap<u64, u64> = HashMap::new();
    let mut input_of: HashMap<u64, u64> = HashMap::new();
    let mut indexes: BTreeMap<u64, BTreeMap<u64, u32>> = BTreeMap::new();
    for _ in 0..total {
        let message = timeout(DEADLINE, messages.next())
            .await
            .expect("the next output within the deadline")
            .expect("an output")
            .expect("an output, not an error");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .expect("Nats-Msg-Id")
            .to_string();
        let payload = std::str::from_utf8(&message.payload).expect("utf-8");
        let (n, i) = payload.split_once('-').expect("n-i");
        let (n, i): (u64, u64) = (n.parse().expect("n"), i.parse().expect("i"));
        let parts: Vec<&str> = id.split(':').collect();
        let &["INPUTS", consumer, sequence, index] = parts.as_slice() else {
            panic!("id {id}");
        };
        assert_eq!(consumer, CONSUMER, "{id}");
        let (sequence, index): (u64, u64) = (sequence.parse().unwrap(), index.parse().unwrap());
        assert_eq!(index, i, "{id} carries {payload}");
        assert_eq!(message.subject.as_str(), format!("out.{}", n % 64), "{id}");
        assert_eq!(*sequence_of.entry(n).or_insert(sequence), sequence, "{id}");
        assert_eq!(*input_of.entry(sequence).or_insert(n), n, "{id}");
        *indexes.entry(n).or_default().entry(i).or_default() += 1;
    }
    let read_in = reading.elapsed();

    let twice: Vec<_> = indexes
        .iter()
        .flat_map(|(n, is)| {
            is.iter()
                .filter(|(_, times)| **times > 1)
                .map(move |(i, times)| format!("{n}-{i} x{times}"))
        })
        .collect();
    assert!(twice.is_empty(), "outputs stored more than once: {twice:?}");
    let partial: Vec<_> = indexes
        .iter()
        .filter(|(n, is)| {
            let want: BTreeSet<u64> = (0..outputs_of(**n)).collect();
            is.keys().copied().collect::<BTreeSet<_>>() != want
        })
        .map(|(n, is)| format!("{n}: {:?}", is.keys().collect::<Vec<_>>()))
        .collect();
    assert!(partial.is_empty(), "inputs stored in part: {partial:?}");
    let missing: Vec<u64> = (1..=inputs).filter(|n| !indexes.contains_key(n)).collect();
    assert!(missing.is_empty(), "inputs without outputs: {missing:?}");
    assert_eq!(indexes.len() as u64, inputs, "no outputs of other inputs");
    assert_eq!(total, expected, "every output once");

    // As the children said it: no input's batch was answered stored twice.
    let stored_twice: Vec<_> = tally.stored.iter().filter(|(_, t)| **t > 1).collect();
    assert!(stored_twice.is_empty(), "stored twice: {stored_twice:?}");

    let deliveries = drained.delivered.consumer_sequence;
    let found_stored = killed_in_flight.intersection(&tally.already_stored).count();
    let stored_later = killed_in_flight
        .iter()
        .filter(|s| !tally.already_stored.contains(s) && tally.stored.contains_key(s))
        .count();
    assert_eq!(
        found_stored + stored_later,
        killed_in_flight.len(),
        "every input a kill caught came back and was stored, or found stored"
    );
    println!(
        "{total} outputs of {inputs} inputs, each exactly once and whole; {KILLS} SIGKILLs and \
         1 cut; {deliveries} deliveries ({} redelivered); {} inputs in a processor at the \
         kills: {found_stored} came back to find their batch stored, {} were stored by a \
         later delivery; {} inputs found their outputs stored already in all; failed {:?}; \
         processed in {:.1} s, read back in {:.1} s",
        deliveries - inputs,
        killed_in_flight.len(),
        stored_later,
        tally.already_stored.len(),
        tally.failed,
        processed_in.as_secs_f64(),
        read_in.as_secs_f64()
    );
}
