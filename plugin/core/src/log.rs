//! Minimal leveled logging to stderr, configured by `SKYLARK_LOG`.
//!
//! The plugin runs inside somebody else's process, so it does not install a global `log`
//! or `tracing` subscriber; it writes its own prefixed lines.
//!
//! Logging never panics: lines are written with write errors ignored (`eprintln!` panics
//! when stderr is broken), because it runs on host-call paths, on background threads and
//! in the `atexit` callback, where a panic could abort the host process. Nor does a
//! stderr pipe without a reader kill the process with `SIGPIPE` ([`crate::sigpipe`]). A
//! line that cannot be written is lost.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Log levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "off" | "none" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);

/// Sets the most verbose level that is printed.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True if messages at `level` are printed.
pub fn enabled(level: Level) -> bool {
    level != Level::Off && level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one line to stderr if `level` is enabled, ignoring write errors. Use the
/// [`crate::skylog!`] macro.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if enabled(level) {
        let mut stderr = std::io::stderr().lock();
        let _no_sigpipe = crate::sigpipe::Blocked::new();
        write_line(&mut stderr, level, args);
    }
}

/// Formats one line into a buffer and writes it to `out` in one piece; a failed write is
/// ignored, never a panic.
fn write_line(out: &mut dyn Write, level: Level, args: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    // Writing into a Vec fails only if a `Display` implementation reports an error;
    // whatever was formatted up to then is still worth a line.
    let _ = write!(line, "[skylark {}] {}", level.label(), args);
    line.push(b'\n');
    let _ = out.write_all(&line);
    let _ = out.flush();
}

/// At most `per_sec` lines a second from one source of lines that a guest controls (the
/// text and the rate of its failed calls), so that a guest cannot flood the node's log.
pub struct RateLimit {
    per_sec: u64,
    /// (second, lines admitted in it).
    window: Mutex<(u64, u64)>,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub const fn new(per_sec: u64) -> RateLimit {
        RateLimit {
            per_sec,
            window: Mutex::new((0, 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written at `now_s` (seconds): `Some(n)` with the number of
    /// lines suppressed since the last admitted one, or `None` (counted as suppressed).
    pub fn admit(&self, now_s: u64) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0 != now_s {
            *w = (now_s, 0);
        }
        if w.1 >= self.per_sec {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// `skylog!(Warn, "...", args)` logs at the given [`Level`].
#[macro_export]
macro_rules! skylog {
    ($level:ident, $($arg:tt)+) => {
        if $crate::log::enabled($crate::log::Level::$level) {
            $crate::log::write($crate::log::Level::$level, format_args!($($arg)+));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_per_second_and_counts_the_rest() {
        let r = RateLimit::new(2);
        assert_eq!(r.admit(10), Some(0));
        assert_eq!(r.admit(10), Some(0));
        assert_eq!(r.admit(10), None);
        assert_eq!(r.admit(10), None);
        assert_eq!(
            r.admit(11),
            Some(2),
            "the next second reports what was dropped"
        );
        assert_eq!(r.admit(11), Some(0));
    }

    #[test]
    fn parse_levels() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse(" debug "), Some(Level::Debug));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Trace);
    }

    /// A writer that fails every write, like stderr with its reader gone.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_failing_writer_is_ignored_and_lines_are_whole() {
        write_line(&mut Broken, Level::Error, format_args!("lost {}", 1));
        let mut out = Vec::new();
        write_line(&mut out, Level::Warn, format_args!("kept {}", 2));
        assert_eq!(out, b"[skylark WARN] kept 2\n");
    }
}
