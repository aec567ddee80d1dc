//! A process of your own under test (a service node, a worker): pause it with SIGSTOP as a VM
//! pause or a blocked host would, resume it, kill it; it is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::server::process_stopped;
use crate::Error;

/// A child process that a test can freeze, continue and kill.
///
/// Stopping a whole process is how a service meets a stall in production (a VM pause, a
/// stop-the-world host, a debugger): every thread and timer stops at once and all resume
/// together, which a paused server or a cut connection does not show.
///
/// # Example
/// ```no_run
/// use std::process::{Command, Stdio};
/// use natty_testkit::Process;
///
/// let mut node = Process::spawn(Command::new("my-service").stdout(Stdio::piped()))?;
/// node.pause()?;   // SIGSTOP; returns once the process is really stopped
/// node.resume()?;  // SIGCONT
/// node.kill();     // SIGKILL (also done on drop)
/// # Ok::<(), natty_testkit::Error>(())
/// ```
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    /// Start `command`.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn spawn(command: &mut Command) -> Result<Self, Error> {
        Ok(Self {
            child: command.spawn().map_err(Error::Io)?,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's standard input, if it was piped and not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's standard output, if it was piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Freeze the whole process with SIGSTOP; returns once it is really stopped.
    ///
    /// # Errors
    /// When the process has exited, or does not stop within 5 s.
    pub fn pause(&mut self) -> Result<(), Error> {
        self.signal(Signal::SIGSTOP)?;
        let stat = PathBuf::from(format!("/proc/{}/stat", self.pid()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process_stopped(&stat) {
            if Instant::now() >= deadline {
                return Err(Error::Timeout("the paused process to stop"));
            }
            std::thread::yield_now();
        }
        Ok(())
    }

    /// Continue a paused process with SIGCONT.
    ///
    /// # Errors
    /// When the process has exited.
    pub fn resume(&mut self) -> Result<(), Error> {
        self.signal(Signal::SIGCONT)
    }

    /// Wait up to `timeout` for the process to exit by itself; `None` if it is still running.
    ///
    /// # Errors
    /// When waiting fails at the operating system.
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<std::process::ExitStatus>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(Error::Io)? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the process with SIGKILL (a stopped one too) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: Signal) -> Result<(), Error> {
        let pid = i32::try_from(self.pid()).map_err(|_| Error::NotRunning)?;
        kill(Pid::from_raw(pid), signal).map_err(|errno| Error::Io(errno.into()))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
