//! This test binary run again as a child process, for the fault tests that stop whole
//! processes: the child's side ([`say`], [`parent_gone`]) and the parent's ([`Child`]), and
//! the runtime both sides run on ([`runtime`], [`run_test`] for a binary without a harness).

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Instant;

use natty_testkit::Process;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::DEADLINE;

/// The multi-thread runtime of two workers a fault test and its children run on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Parent side, in a test binary without a harness: run `test` and say it passed, as
/// `<name>: 1 passed, 0 failed in <secs> s` (a failure panics).
pub(crate) fn run_test(name: &str, test: impl Future<Output = ()>) {
    let started = Instant::now();
    runtime().block_on(test);
    println!(
        "{name}: 1 passed, 0 failed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Child side: one line to the parent, flushed at once.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Child side: returns once the parent has closed its stdin, because it is done or died.
pub(crate) async fn parent_gone() {
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
}

/// Parent side: a child named `name` (for messages), its stdin (closing it tells the child to
/// stop) and the lines it says.
pub(crate) struct Child {
    pub(crate) name: String,
    pub(crate) process: Process,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: mpsc::UnboundedReceiver<String>,
}

impl Child {
    /// Run this test binary again with `envs` (which select its child mode).
    pub(crate) fn spawn(name: impl Into<String>, envs: &[(&str, String)]) -> Self {
        let name = name.into();
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command.stdin(Stdio::piped()).stdout(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut process = Process::spawn(&mut command).expect("the child starts");
        let stdin = process.take_stdin();
        let stdout = process.take_stdout().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        // Ends when the child's stdout does, that is when it exits.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name,
            process,
            stdin,
            lines,
        }
    }

    /// The rest of the next line that starts with `word`, handing every other line to `other`.
    pub(crate) async fn next_line(&mut self, word: &str, mut other: impl FnMut(&str)) -> String {
        let lines = &mut self.lines;
        let found = timeout(DEADLINE, async {
            while let Some(line) = lines.recv().await {
                match line.strip_prefix(word) {
                    Some(rest) => return Some(rest.trim_start().to_owned()),
                    None => other(&line),
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(rest)) => rest,
            Ok(None) => panic!("{} exited before `{word}`", self.name),
            Err(_) => panic!("{}: no `{word}` within {DEADLINE:?}", self.name),
        }
    }

    /// Every line it says until its stdout closes (it exited), each handed to `line`.
    pub(crate) async fn read_to_end(&mut self, mut line: impl FnMut(&str)) {
        while let Some(said) = timeout(DEADLINE, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("{}'s output ends", self.name))
        {
            line(&said);
        }
    }
}
