//! The process allocator's handling of large buffers (issue 14 point 4). A bundle read
//! allocates one buffer per value and frees them once the bundle is in guest memory.
//! glibc serves a buffer above its mmap threshold (128 KiB, raised dynamically up to the
//! largest one freed) with a fresh `mmap`, and gives the top of its heap back to the
//! kernel once more than its trim threshold is free: in a process that reads a 10 x 1 MiB
//! bundle over and over, every read faulted its buffers in anew (a third of its time, as
//! `perf` showed: page faults and page clearing). With large buffers kept on the heap and
//! up to [`TRIM_BYTES`] of free heap kept, a warm 10 x 1 MiB read took about 5.5 ms
//! instead of 8.5-11 ms here (BENCHMARKS.md section 1).
//!
//! It applies to the whole `wasmedge` process (the allocator is the process's): a process
//! that read a large bundle keeps up to [`TRIM_BYTES`] of freed memory until it exits. An
//! operator who tunes glibc's allocator (`GLIBC_TUNABLES` naming `glibc.malloc`) keeps
//! exactly that tuning.

/// Buffers up to this size come from the heap (glibc's largest mmap threshold on 64-bit).
pub const HEAP_BUFFERS_UP_TO: usize = 32 << 20;

/// Free heap kept for the next buffers before glibc returns it to the kernel.
pub const TRIM_BYTES: usize = 64 << 20;

/// Applies the settings above, once per process, unless `GLIBC_TUNABLES` tunes malloc.
/// Returns whether they were applied (by this call or an earlier one).
pub fn keep_large_buffers() -> bool {
    static APPLIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APPLIED.get_or_init(|| {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc"));
        !tuned && apply()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    let as_int = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes glibc's allocator parameters (under its own lock); both
    // values are within the ranges glibc documents for them.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(HEAP_BUFFERS_UP_TO)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_BYTES)) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_settings() {
        assert!(super::apply());
    }
}
