//! Keeps a write to a broken pipe from killing the host process.
//!
//! Writing to a pipe whose reader is gone raises `SIGPIPE`, whose default action ends the
//! process; the plugin cannot choose the host's signal dispositions, and its stderr may be
//! such a pipe. While a [`Blocked`] guard lives, `SIGPIPE` is blocked on the calling
//! thread, so the write fails with `EPIPE` instead; when the guard drops, a `SIGPIPE` the
//! write raised is taken off the thread (one that was pending before is left alone) and
//! the thread's signal mask is restored. Linux only; elsewhere the guard does nothing.

/// `SIGPIPE` blocked on this thread until the value is dropped.
pub struct Blocked {
    #[cfg(target_os = "linux")]
    state: Option<linux::State>,
}

impl Blocked {
    /// Blocks `SIGPIPE` on the calling thread (best effort: if that fails, nothing changes).
    pub fn new() -> Blocked {
        Blocked {
            #[cfg(target_os = "linux")]
            state: linux::block(),
        }
    }
}

impl Default for Blocked {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(state) = self.state.take() {
            linux::restore(state);
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::mem::MaybeUninit;

    pub struct State {
        /// The thread's signal mask before blocking.
        old: libc::sigset_t,
        /// `SIGPIPE` was pending before: not ours to consume.
        was_pending: bool,
    }

    /// The set holding only `SIGPIPE`.
    fn sigpipe_set() -> libc::sigset_t {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given, and sigaddset then only
        // adds a valid signal number to that initialised set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
            set.assume_init()
        }
    }

    pub fn sigpipe_pending() -> bool {
        let mut pending = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigpending fills the set it is given; it is read only after success.
        unsafe {
            libc::sigpending(pending.as_mut_ptr()) == 0
                && libc::sigismember(pending.as_ptr(), libc::SIGPIPE) == 1
        }
    }

    pub fn block() -> Option<State> {
        let set = sigpipe_set();
        let was_pending = sigpipe_pending();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` is initialised; pthread_sigmask writes the previous mask to `old`,
        // which is read only after it returned success.
        unsafe {
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr()) != 0 {
                return None;
            }
            Some(State {
                old: old.assume_init(),
                was_pending,
            })
        }
    }

    pub fn restore(state: State) {
        if !state.was_pending && sigpipe_pending() {
            let set = sigpipe_set();
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `set` and `zero` are initialised and outlive the call; a null
            // `siginfo` pointer is allowed. With a zero timeout it never waits.
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) };
        }
        // SAFETY: `state.old` is the mask pthread_sigmask reported for this thread.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &state.old, std::ptr::null_mut()) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// Under the guard a write to a pipe without a reader fails with EPIPE and its SIGPIPE
    /// is held pending instead of delivered; afterwards the mask is as before. (The test
    /// harness ignores SIGPIPE, so whether the held signal is consumed shows only with the
    /// default disposition: tests/tests/ffi.rs runs wasmedge so.)
    #[test]
    fn a_broken_pipe_write_holds_its_signal_and_the_mask_is_restored() {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        drop(read);
        // SAFETY: as above.
        let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        let mut file = std::fs::File::from(write);
        let mask = || {
            let mut m = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: a null new mask only reads the current one into `m`.
            unsafe {
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), m.as_mut_ptr()),
                    0
                );
                libc::sigismember(m.as_ptr(), libc::SIGPIPE)
            }
        };
        let before = mask();
        {
            let _guard = Blocked::new();
            assert_eq!(mask(), 1, "blocked while the guard lives");
            let e = file.write_all(b"x").unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
            assert!(linux::sigpipe_pending(), "the write's SIGPIPE is held");
        }
        assert_eq!(mask(), before, "mask restored");
        assert!(!linux::sigpipe_pending());
    }
}
