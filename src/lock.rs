//! The kernel lock on `state_dir` that keeps two hoist processes from acting
//! on the same server at once.
//!
//! flock(2) is released by the kernel when the process exits, however it
//! exits, so there is never a stale lock file to clean up by hand.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};

pub struct StateLock {
    _lock: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another hoist holds the lock on {0}")]
    Held(PathBuf),
    #[error("cannot open the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock without waiting.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let path = state_dir.join("lock");
        std::fs::create_dir_all(state_dir).map_err(|source| LockError::Io {
            path: path.clone(),
            source,
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                Err(LockError::Held(state_dir.to_path_buf()))
            }
            Err((_, e)) => Err(LockError::Io {
                path,
                source: std::io::Error::from(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            StateLock::acquire(dir.path()),
            Err(LockError::Held(_))
        ));
        drop(first);
        assert!(StateLock::acquire(dir.path()).is_ok());
    }
}
