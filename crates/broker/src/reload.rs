//! Making Mosquitto read its files again, and knowing that it did.
//!
//! Mosquitto re-reads its ACL file, password file and CRL on `SIGHUP`. A signal
//! only asks: the reload happens a moment later in Mosquitto's main loop. To
//! return only once the change is in force, [`Reloader::reload`] watches the file
//! just written with inotify and waits until someone has opened and closed it
//! without writing: Mosquitto reading it. Mosquitto reloads in one pass of its
//! single-threaded loop, so every message it handles after that read is checked
//! against the new files. This needs the files on a local file system shared
//! with Mosquitto (a bind mount into a container works; NFS does not).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::BrokerError;

/// How Mosquitto is told to read its files again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Send `SIGHUP` to the pid in this file (Mosquitto's `pid_file`). The
    /// process must be allowed to signal Mosquitto: same user, or root.
    ///
    /// A pid file that does not exist means Mosquitto is not running yet (a
    /// fresh install, the files written before Mosquitto starts): the reload is
    /// skipped with a log line and the call succeeds, since Mosquitto reads the
    /// files when it starts. A pid file that exists but cannot be read or holds
    /// no process id is an error.
    Signal { pid_file: PathBuf },
    /// Run this program with these arguments (`systemctl reload mosquitto`,
    /// `docker kill -s HUP mosquitto`); a non-zero exit is an error.
    Command { program: PathBuf, args: Vec<String> },
    /// Do nothing: something else reloads Mosquitto (a file watcher, a cron job).
    /// Calls then return once the files are written, before the broker enforces
    /// them.
    None,
}

/// How long to wait for Mosquitto to read the new file by default.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub(crate) struct Reloader {
    pub(crate) reload: Reload,
    /// `None`: do not wait for Mosquitto to read the file.
    pub(crate) confirm_timeout: Option<Duration>,
}

impl Reloader {
    /// Asks Mosquitto to reload and, unless confirmation is off or there is no
    /// reload, waits until it has read `watched` (which must exist).
    pub(crate) fn reload(&self, watched: &Path) -> Result<(), BrokerError> {
        // The pid is read before the watch is set up: a missing pid file means
        // there is no Mosquitto to reload (nor to wait for).
        let pid = match &self.reload {
            Reload::None => return Ok(()),
            Reload::Signal { pid_file } => match read_pid(pid_file)? {
                Some(pid) => Some((pid, pid_file)),
                None => {
                    tracing::info!(
                        pid_file = %pid_file.display(),
                        file = %watched.display(),
                        "Mosquitto's pid file does not exist (Mosquitto not running yet): \
                         file written, reload skipped"
                    );
                    return Ok(());
                }
            },
            Reload::Command { .. } => None,
        };
        let watch = match self.confirm_timeout {
            Some(timeout) => Some((watch_reads(watched)?, timeout)),
            None => None,
        };
        let ask = || -> Result<(), BrokerError> {
            match (&self.reload, pid) {
                (_, Some((pid, pid_file))) => signal(pid, pid_file),
                (Reload::Command { program, args }, None) => run(program, args),
                _ => Ok(()),
            }
        };
        ask()?;
        if let Some((inotify, timeout)) = watch {
            wait_for_read(&inotify, watched, timeout, ask)?;
        }
        Ok(())
    }
}

fn watch_reads(path: &Path) -> Result<Inotify, BrokerError> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| BrokerError::io("watch", path, e.into()))?;
    inotify
        .add_watch(path, AddWatchFlags::IN_CLOSE_NOWRITE)
        .map_err(|e| BrokerError::io("watch", path, e.into()))?;
    Ok(inotify)
}

/// How long to wait for a read before asking again: Mosquitto clears its reload
/// flag after a reload, so a `SIGHUP` that arrives while it reloads (for an
/// earlier change) is lost, and the new file is never read unless asked again.
const ASK_AGAIN: Duration = Duration::from_millis(500);

fn wait_for_read(
    inotify: &Inotify,
    path: &Path,
    timeout: Duration,
    ask_again: impl Fn() -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + timeout;
    let mut next_ask = Instant::now() + ASK_AGAIN;
    loop {
        match inotify.read_events() {
            Ok(events) if !events.is_empty() => return Ok(()),
            Ok(_) | Err(Errno::EAGAIN) => {}
            Err(e) => return Err(BrokerError::io("watch", path, e.into())),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(BrokerError::ReloadNotConfirmed {
                path: path.to_path_buf(),
                timeout,
            });
        }
        if now >= next_ask {
            ask_again()?;
            next_ask = now + ASK_AGAIN;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid in Mosquitto's pid file; `None` when the file does not exist.
fn read_pid(pid_file: &Path) -> Result<Option<i32>, BrokerError> {
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BrokerError::io("read the pid file", pid_file, e)),
    };
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
        BrokerError::Reload(format!("{} holds no process id", pid_file.display()))
    })?;
    Ok(Some(pid))
}

fn signal(pid: i32, pid_file: &Path) -> Result<(), BrokerError> {
    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| {
        BrokerError::Reload(format!(
            "SIGHUP to pid {pid} (from {}): {e}",
            pid_file.display()
        ))
    })
}

fn run(program: &Path, args: &[String]) -> Result<(), BrokerError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| BrokerError::Reload(format!("cannot run {}: {e}", program.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(BrokerError::Reload(format!(
        "{} exited with {}: {}",
        program.display(),
        out.status,
        stderr.trim().chars().take(300).collect::<String>()
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Mosquitto loses a `SIGHUP` that arrives while it reloads: a request that
    /// is not followed by a read is made again.
    #[test]
    fn a_lost_reload_request_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acl");
        let count = dir.path().join("count");
        fs::write(&file, "x").unwrap();
        // Reads the file only on its second run.
        let script = format!(
            "n=$(cat {c} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {c}; \
             if [ $n -ge 2 ]; then cat {f} > /dev/null; fi",
            c = count.display(),
            f = file.display()
        );
        let lossy = Reloader {
            reload: Reload::Command {
                program: "sh".into(),
                args: vec!["-c".into(), script],
            },
            confirm_timeout: Some(Duration::from_secs(10)),
        };
        lossy.reload(&file).unwrap();
        assert_eq!(fs::read_to_string(&count).unwrap().trim(), "2");
    }

    #[test]
    fn a_read_confirms_and_no_read_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acl");
        fs::write(&file, "x").unwrap();
        // The "reload command" reads the file, as Mosquitto would.
        let reading = Reloader {
            reload: Reload::Command {
                program: "cat".into(),
                args: vec![file.display().to_string()],
            },
            confirm_timeout: Some(Duration::from_secs(5)),
        };
        reading.reload(&file).unwrap();
        let silent = Reloader {
            reload: Reload::Command {
                program: "true".into(),
                args: vec![],
            },
            confirm_timeout: Some(Duration::from_millis(50)),
        };
        assert!(matches!(
            silent.reload(&file),
            Err(BrokerError::ReloadNotConfirmed { .. })
        ));
        let unconfirmed = Reloader {
            confirm_timeout: None,
            ..silent
        };
        unconfirmed.reload(&file).unwrap();
    }

    #[test]
    fn failures_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acl");
        fs::write(&file, "x").unwrap();
        let failing = Reloader {
            reload: Reload::Command {
                program: "false".into(),
                args: vec![],
            },
            confirm_timeout: None,
        };
        assert!(matches!(failing.reload(&file), Err(BrokerError::Reload(_))));
        // A pid file that exists but cannot be read (here: a directory).
        let unreadable = Reloader {
            reload: Reload::Signal {
                pid_file: dir.path().to_path_buf(),
            },
            confirm_timeout: None,
        };
        assert!(matches!(
            unreadable.reload(&file),
            Err(BrokerError::Io {
                action: "read the pid file",
                ..
            })
        ));
        let junk = dir.path().join("junk.pid");
        fs::write(&junk, "not a pid\n").unwrap();
        let junk_pid = Reloader {
            reload: Reload::Signal { pid_file: junk },
            confirm_timeout: None,
        };
        assert!(matches!(
            junk_pid.reload(&file),
            Err(BrokerError::Reload(m)) if m.contains("holds no process id")
        ));
        Reloader {
            reload: Reload::None,
            confirm_timeout: Some(Duration::from_millis(1)),
        }
        .reload(&file)
        .unwrap();
    }

    #[test]
    fn a_missing_pid_file_means_mosquitto_is_not_running_yet() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acl");
        fs::write(&file, "x").unwrap();
        // Not even the pid file's directory exists (as /run/mosquitto before
        // Mosquitto's first start); confirmation on, and nothing would read.
        let missing = Reloader {
            reload: Reload::Signal {
                pid_file: dir.path().join("run").join("mosquitto.pid"),
            },
            confirm_timeout: Some(DEFAULT_CONFIRM_TIMEOUT),
        };
        missing.reload(&file).unwrap();
    }
}
