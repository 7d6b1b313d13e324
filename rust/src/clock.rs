//! The process's monotonic clock in milliseconds, for the Python side's admission clock (the
//! core modules never read a clock: time is passed in).

/// Milliseconds of the system's monotonic clock (`CLOCK_MONOTONIC`, the clock behind Python's
/// `time.monotonic()` on Linux), for callers that read the time on every request: one native call
/// instead of `time.monotonic_ns() // 1_000_000` in a Python function.
#[cfg(unix)]
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// Elsewhere: milliseconds since the first call (monotonic, but not Python's clock).
#[cfg(not(unix))]
pub fn monotonic_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_ms_does_not_go_back() {
        let a = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = monotonic_ms();
        assert!(b >= a + 4, "{a} -> {b}");
    }
}
