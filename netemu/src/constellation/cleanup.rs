//! Clean-up on SIGINT and SIGTERM: a registry of the live constellations' stores and
//! directories, and a handler that stops and removes them before the process exits.

use skylark_testkit::Redis;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A live constellation's stores and directory, for the interrupt handler.
pub(super) struct Registered {
    id: u64,
    /// `None` for a store that is down.
    pids: Vec<Option<u32>>,
    dir: PathBuf,
}

/// Every live constellation, as the interrupt handler sees it.
pub(super) static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Numbers registrations.
pub(super) static NEXT_REGISTRATION: AtomicU64 = AtomicU64::new(0);

/// The registry, even if a thread panicked while holding it.
pub(super) fn registry() -> MutexGuard<'static, Vec<Registered>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A constellation's entry in the registry, removed on drop.
pub(super) struct Registration(u64);

impl Registration {
    pub(super) fn new(stores: &[Redis], dir: &Path) -> Registration {
        let id = NEXT_REGISTRATION.fetch_add(1, Ordering::Relaxed);
        registry().push(Registered {
            id,
            pids: stores.iter().map(|s| Some(s.pid())).collect(),
            dir: dir.to_path_buf(),
        });
        Registration(id)
    }

    /// Runs `change` (which stops or starts store `index`) while holding the registry,
    /// so that the interrupt handler never signals a process already reaped, then records
    /// the process the store runs as now (`None`: down).
    pub(super) fn change_store<T>(
        &self,
        index: usize,
        change: impl FnOnce() -> Result<(T, Option<u32>), String>,
    ) -> Result<T, String> {
        let mut registry = registry();
        let (value, pid) = change()?;
        let entry = registry.iter_mut().find(|r| r.id == self.0);
        if let Some(slot) = entry.and_then(|r| r.pids.get_mut(index)) {
            *slot = pid;
        }
        Ok(value)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Blocks while the interrupt handler cleans up (and the process then exits), so
        // a store is never reaped twice.
        registry().retain(|r| r.id != self.0);
    }
}

/// Write end of the pipe the signal handler reports to (-1 before installation).
pub(super) static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Whether [`install_interrupt_cleanup`] succeeded already.
pub(super) static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Makes SIGINT and SIGTERM stop every live constellation's stores, remove its
/// temporary directory and then exit the process with status 130 (SIGINT) or 143
/// (SIGTERM). For binaries; call once (later calls do nothing). It replaces any handler
/// of those signals. The handler only writes the signal number to a pipe; a thread
/// reading that pipe does the work (`exit` skips destructors, so proxies and threads just
/// end with the process).
pub fn install_interrupt_cleanup() -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *installed {
        return Ok(());
    }
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(context(io::Error::last_os_error(), "cannot create a pipe"));
    }
    // SAFETY: both descriptors are fresh and owned here.
    let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // A handler never blocks on a full pipe: further signals are dropped instead.
    // SAFETY: plain fcntl on an open descriptor.
    if unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(context(
            io::Error::last_os_error(),
            "cannot configure the pipe",
        ));
    }
    std::thread::Builder::new()
        .name("constellation-signals".into())
        .spawn(move || on_interrupt(reader))
        .map_err(|e| context(e, "cannot start the signal thread"))?;
    // The write end lives for the rest of the process.
    SIGNAL_PIPE.store(
        std::os::fd::IntoRawFd::into_raw_fd(writer),
        Ordering::SeqCst,
    );
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe.
        let result = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = report_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if result != 0 {
            return Err(context(
                io::Error::last_os_error(),
                &format!("cannot handle signal {signal}"),
            ));
        }
    }
    *installed = true;
    Ok(())
}

/// The signal handler: writes the signal number to the pipe (async-signal-safe).
extern "C" fn report_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let byte = signal as u8;
    // SAFETY: write(2) on an open descriptor from a one-byte buffer; errno is restored
    // so that the interrupted code does not see the handler's.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = errno;
    }
}

/// The signal thread: waits for a signal, cleans up every registered constellation and
/// exits with `128 + signal`, holding the registry so no drop races the clean-up.
pub(super) fn on_interrupt(mut pipe: File) {
    let mut byte = [0u8; 1];
    if pipe.read_exact(&mut byte).is_err() {
        return;
    }
    let signal = i32::from(byte[0]);
    let registry = registry();
    for entry in registry.iter() {
        for &pid in entry.pids.iter().flatten() {
            // SAFETY: the pid is an unreaped child (its `Registration` is still there).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for &pid in entry.pids.iter().flatten() {
            // SAFETY: as above; a null status pointer is allowed.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
        }
        let _ = std::fs::remove_dir_all(&entry.dir);
    }
    eprintln!(
        "constellation: signal {signal}: stopped {} constellation(s)",
        registry.len()
    );
    std::process::exit(128 + signal);
}

/// `e` with `what` in front of its message, keeping its kind.
pub(super) fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
