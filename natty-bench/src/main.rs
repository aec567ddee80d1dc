//! natty-bench: natty against hand-written async-nats baselines.
//!
//! Starts its own `nats-server` through natty-testkit (JetStream, file storage, loopback),
//! runs every scenario asked for with natty and its baseline alternating for three rounds,
//! and prints one `BENCH` line per comparison and a table. Lines ending in `-mem` repeat the
//! line before them on a memory-storage stream.
//!
//! | group | lines |
//! |---|---|
//! | `publish` | `publish-vs-window`, `publish-vs-window-msgid`, `publish-vs-fast-ingest` (each also `-mem`), `publish-vs-naive` |
//! | `consume` | `consume-stack`, `consume-ceiling` (each also `-mem`), `consume-latency` |
//! | `kv` | `kv-get`, `kv-put` |
//! | `axum` | `axum-publish` |
//! | `leader` | `leader-handover`, `leader-failover-crash` |
//! | `memory` | `publish-memory` (the process's memory, not a stream's storage) |
//! | `groups` | `groups-vs-ordered`, `groups-efficiency` |
//! | `service` | `service-request`, `service-latency` |
//! | `process` | `processor-vs-hand-written` (nats-server 2.12.1+) |
//!
//! `all` runs every group but `explain` (breakdowns, no lines); at full scale it takes about
//! three minutes on 2 cores.
//!
//! ```text
//! cargo run --release -p natty-bench -- all
//! cargo run --release -p natty-bench -- publish kv --scale 0.2
//! ```

mod load;
mod report;
mod scenario;

use std::time::Instant;

use scenario::{
    axum_publish, consume, consume_latency, explain, groups, groups_efficiency, kv, leader, memory,
    process, publish, service, Bench, BoxError, Comparison,
};

const USAGE: &str =
    "usage: natty-bench [--scale FACTOR] <all | publish | consume | kv | axum | leader | memory | groups | service | process | explain>...";

/// The scenario groups, in the order `all` runs them.
const GROUPS: [&str; 9] = [
    "publish", "consume", "kv", "axum", "leader", "memory", "groups", "service", "process",
];
/// Groups that only `explain` runs: breakdowns of the missed goals, no comparisons.
const EXTRA: [&str; 1] = ["explain"];

#[tokio::main]
async fn main() {
    if let Err(err) = run(std::env::args().skip(1).collect()).await {
        eprintln!("natty-bench: {err}");
        std::process::exit(1);
    }
}

async fn run(args: Vec<String>) -> Result<(), BoxError> {
    if args.first().map(String::as_str) == Some(memory::CHILD_COMMAND) {
        let calls = args.get(1).ok_or(USAGE)?.parse()?;
        return memory::child(calls).await;
    }
    let mut scale = 1.0;
    let mut groups = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scale" => scale = args.next().ok_or(USAGE)?.parse()?,
            "all" => groups.extend(GROUPS),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            group => match GROUPS.iter().chain(&EXTRA).find(|g| **g == group) {
                Some(known) => groups.push(known),
                None => return Err(format!("unknown scenario {group:?}\n{USAGE}").into()),
            },
        }
    }
    if groups.is_empty() {
        return Err(USAGE.into());
    }

    let started = Instant::now();
    let bench = Bench::start(scale).await?;
    println!(
        "natty-bench: nats-server {} (file storage, -mem lines on memory-storage streams, loopback), {}, {} cores, scale {scale}",
        bench.natty.server_info().version(),
        cpu_model(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let mut comparisons: Vec<Comparison> = Vec::new();
    for group in groups {
        let group_started = Instant::now();
        let results = match group {
            "publish" => publish::run(&bench).await?,
            "consume" => {
                let mut lines = consume::run(&bench).await?;
                lines.extend(consume_latency::run(&bench).await?);
                lines
            }
            "kv" => kv::run(&bench).await?,
            "axum" => axum_publish::run(&bench).await?,
            "leader" => leader::run(&bench).await?,
            "memory" => memory::run(scale).await?,
            "groups" => {
                let mut lines = groups::run(&bench).await?;
                lines.extend(groups_efficiency::run(&bench).await?);
                lines
            }
            "service" => service::run(&bench).await?,
            "process" => process::run(&bench).await?,
            "explain" => {
                explain::run(&bench).await?;
                Vec::new()
            }
            _ => unreachable!("groups are checked against GROUPS"),
        };
        for comparison in &results {
            println!("{}", comparison.bench_line());
        }
        println!(
            "  ({group} took {:.1} s)",
            group_started.elapsed().as_secs_f64()
        );
        comparisons.extend(results);
    }
    println!("\n{}", report::table(&comparisons));
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The CPU model from `/proc/cpuinfo`, for the report header.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
