//! `publish-memory`: peak resident memory while `try_publish` is called 1,000,000 times with
//! the server stopped.
//!
//! The peak (`VmHWM`) of a process cannot be reset, so each run is a child process of this
//! binary (the hidden `publish-memory-child` command) with a server of its own; the parent
//! reads its report. The budget is what the bounded publisher promises: the queue and the ack
//! window full of messages, at [`BYTES_PER_MESSAGE`] each, plus a fixed [`ALLOWANCE`] for
//! the runtime and the client's buffers.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use natty::error::PublishErrorKind;
use natty::{ConnectionState, Natty, PublishConfig};
use natty_testkit::Server;

use super::{BoxError, Comparison, PAYLOAD_SIZE, ROUNDS};
use crate::report::{Better, Goal};

const STREAM: &str = "BENCH_MEMORY";
const SUBJECT: &str = "bench.memory";
const CALLS: usize = 1_000_000;
/// natty's default queue bound and ack window, set explicitly so the budget below follows them.
const QUEUE_CAPACITY: usize = 8192;
const WINDOW: usize = 256;
/// A queued message: the 128-byte payload, its header map with a `Nats-Msg-Id`, and
/// allocator overhead, rounded up.
const BYTES_PER_MESSAGE: u64 = 1024;
/// Runtime, client buffers and allocator slack.
const ALLOWANCE: u64 = 16 * 1024 * 1024;
/// The command the parent runs in the child.
pub(crate) const CHILD_COMMAND: &str = "publish-memory-child";

/// The budget every run must stay under.
fn budget() -> u64 {
    (QUEUE_CAPACITY + WINDOW) as u64 * BYTES_PER_MESSAGE + ALLOWANCE
}

/// Run the child [`ROUNDS`] times and compare each peak with the budget.
pub(crate) async fn run(scale: f64) -> Result<Vec<Comparison>, BoxError> {
    let calls = ((CALLS as f64 * scale) as usize).max(1);
    let mut comparison = Comparison::new(
        "publish-memory",
        "bytes",
        Better::Lower,
        Goal::RatioAtLeast(1.0),
        "budget: (queue + window) x 1 KiB + 16 MiB",
    );
    for _ in 0..ROUNDS {
        let report = tokio::task::spawn_blocking(move || child_report(calls)).await??;
        println!("  publish-memory child: {report}");
        let growth = field(&report, "growth")?;
        comparison.natty.push(growth as f64);
        comparison.baseline.push(budget() as f64);
    }
    Ok(vec![comparison])
}

fn child_report(calls: usize) -> Result<String, BoxError> {
    let output = Command::new(std::env::current_exe()?)
        .arg(CHILD_COMMAND)
        .arg(calls.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "publish-memory child failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    stdout
        .lines()
        .find(|line| line.starts_with("MEMORY "))
        .map(str::to_owned)
        .ok_or_else(|| format!("publish-memory child printed no report: {stdout}").into())
}

fn field(report: &str, name: &str) -> Result<u64, BoxError> {
    report
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("no {name} in {report}"))?
        .parse()
        .map_err(Into::into)
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn status_bytes(name: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(name))
        .ok_or_else(|| format!("no {name} in /proc/self/status"))?;
    let kb: u64 = line
        .trim_start_matches(name)
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// The child: publish with the server gone and print one `MEMORY` line.
pub(crate) async fn child(calls: usize) -> Result<(), BoxError> {
    let server = Server::start()?;
    let publish = PublishConfig::default()
        .queue_capacity(QUEUE_CAPACITY)
        .window(WINDOW);
    let natty = Natty::connect(natty::Config::new([server.url()]).publish(publish)).await?;
    natty.stream(STREAM)?.create([SUBJECT]).await?;
    // Warm up the worker, the runtime and the connection while the server is up.
    for _ in 0..1_000 {
        natty
            .publish(SUBJECT, Bytes::from(vec![b'x'; PAYLOAD_SIZE]))
            .await?;
    }
    natty.flush().await;

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while natty.connection_state() == ConnectionState::Connected {
        if Instant::now() > deadline {
            return Err("the client did not notice the server stop".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let before = status_bytes("VmRSS")?;
    let (mut accepted, mut full) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..calls {
        // A fresh payload per call, so what the queue holds is really held.
        match natty
            .publisher()
            .try_publish(SUBJECT, Bytes::from(vec![b'x'; PAYLOAD_SIZE]))
        {
            Ok(()) => accepted += 1,
            Err(err) if err.kind() == PublishErrorKind::Full => full += 1,
            Err(err) => return Err(err.into()),
        }
    }
    let elapsed = start.elapsed();
    let peak = status_bytes("VmHWM")?;
    println!(
        "MEMORY growth={} peak={peak} rss_before={before} accepted={accepted} full={full} calls={calls} seconds={:.2} budget={}",
        peak.saturating_sub(before),
        elapsed.as_secs_f64(),
        budget()
    );
    Ok(())
}
