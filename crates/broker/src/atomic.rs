//! Atomic file replacement and the cross-process writer lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::error::BrokerError;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `contents` so that a reader sees either the old file or the
/// new one, never a part: a temporary file in the same directory is written,
/// flushed to disk (`fsync`), given `mode`, and renamed over `path`; then the
/// directory is flushed so the rename survives a crash.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), BrokerError> {
    let dir = parent(path);
    fs::create_dir_all(&dir).map_err(|e| BrokerError::io("create the directory", &dir, e))?;
    let name = path.file_name().ok_or_else(|| {
        BrokerError::InvalidConfig(format!("{} is not a file path", path.display()))
    })?;
    let temp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp(&temp, contents, mode).and_then(|()| {
        fs::rename(&temp, path).map_err(|e| BrokerError::io("rename into place", path, e))
    });
    if result.is_err() {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&temp);
        return result;
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io("flush the directory of", path, e))
}

fn write_temp(temp: &Path, contents: &[u8], mode: u32) -> Result<(), BrokerError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(temp)
        .map_err(|e| BrokerError::io("create", temp, e))?;
    // The umask may have cleared bits of `mode`: set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| BrokerError::io("set the mode of", temp, e))?;
    file.write_all(contents)
        .map_err(|e| BrokerError::io("write", temp, e))?;
    file.sync_all()
        .map_err(|e| BrokerError::io("flush", temp, e))
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An exclusive `flock` on `<path>.lock`, held until dropped: one writer at a time
/// across processes (the server and `onboardctl`) for the files next to it.
pub(crate) fn lock_beside(path: &Path) -> Result<Flock<File>, BrokerError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    // The files' directory appears with the first write (e.g. ./data/mosquitto/).
    let dir = parent(&lock_path);
    fs::create_dir_all(&dir).map_err(|e| BrokerError::io("create the directory", &dir, e))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| BrokerError::io("open the lock file", &lock_path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| BrokerError::io("lock", &lock_path, errno.into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn replaces_with_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl");
        write_atomic(&path, b"one", 0o644).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        let small = b"-----BEGIN X509 CRL-----\nsmall\n-----END X509 CRL-----\n".to_vec();
        let mut big = b"-----BEGIN X509 CRL-----\n".to_vec();
        big.extend(std::iter::repeat_n(b'A', 4 << 20));
        big.extend_from_slice(b"\n-----END X509 CRL-----\n");
        write_atomic(&path, &small, 0o644).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            let (small, big) = (small.clone(), big.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let seen = fs::read(&path).unwrap();
                    assert!(
                        seen == small || seen == big,
                        "partial read: {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..40 {
            write_atomic(&path, if i % 2 == 0 { &big } else { &small }, 0o644).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl");
        let held = lock_beside(&path).unwrap();
        let second = OpenOptions::new()
            .write(true)
            .open(dir.path().join("acl.lock"))
            .unwrap();
        assert!(Flock::lock(second, FlockArg::LockExclusiveNonblock).is_err());
        drop(held);
        assert!(lock_beside(&path).is_ok());
    }
}
