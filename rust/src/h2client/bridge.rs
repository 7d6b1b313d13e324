//! Events from the runtime thread to Python's: a queue, and one pipe byte per batch.
//!
//! A batch is whatever the runtime produced until the reader came for it: the byte is written by
//! `run_waker` after the tasks that were ready have run (one socket read may complete frames of
//! hundreds of streams), and no second byte follows until the reader drained, so the Python thread
//! wakes once for all of them instead of once per event.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Event;

pub struct EventQueue {
    queue: Mutex<Vec<Event>>,
    read_fd: RawFd,
    write_fd: RawFd,
    /// The reader has been (or is being) woken and has not drained since: set by `push`, cleared by
    /// `drain`.
    armed: AtomicBool,
    notify: Notify,
}

impl EventQueue {
    pub fn new() -> io::Result<EventQueue> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventQueue {
            queue: Mutex::new(Vec::new()),
            read_fd: fds[0],
            write_fd: fds[1],
            armed: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    pub fn wake_fd(&self) -> RawFd {
        self.read_fd
    }

    /// Append an event (from a runtime task); `run_waker` wakes the reader at the end of the turn.
    pub fn push(&self, event: Event) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }

    /// Append an event and wake the reader at once (from outside the runtime).
    pub fn push_now(&self, event: Event) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        self.wake();
    }

    fn wake(&self) {
        // SAFETY: writing one byte from a valid buffer to our own pipe. A full pipe (EAGAIN)
        // already holds a wake-up, so the result can be ignored.
        unsafe { libc::write(self.write_fd, [1u8].as_ptr().cast(), 1) };
    }

    /// The runtime task that turns pushes into wake-ups, one per batch, and at most one per
    /// `interval` under load.
    ///
    /// A wake-up that comes less than `interval` after the previous one puts the runtime thread to
    /// sleep for the rest of the interval, so frames queue in the sockets and the next turn (and
    /// the reader's next batch) takes them all at once. Without it, 2,000 paced streams cost a
    /// thread switch every few events, and on a core shared with the event loop (a pinned worker)
    /// that doubled the CPU per event (docs/performance.md, "Upstream HTTP/2"). An idle pool wakes
    /// the reader at once: the delay is only ever paid when events are arriving faster than
    /// `interval`, and it is bounded by it.
    pub async fn run_waker(&self, interval: Duration) {
        let mut last = Instant::now()
            .checked_sub(interval)
            .unwrap_or_else(Instant::now);
        loop {
            self.notify.notified().await;
            // Behind every task that is ready now: their events join this batch.
            tokio::task::yield_now().await;
            self.wake();
            let since = last.elapsed();
            if since < interval {
                // Blocking on purpose: the whole runtime pauses, not just this task.
                std::thread::sleep(interval - since);
            }
            // From the end of the pause: the next wake-up (behind the turn that takes what queued
            // meanwhile) pauses again, so under load they come one interval apart, not in pairs.
            last = Instant::now();
        }
    }

    /// Everything queued so far. The order matters: empty the pipe, then disarm, then take the
    /// queue. A push before the disarm is in what this returns; a push after it arms (and writes)
    /// the next wake-up, whose byte this call can no longer swallow.
    pub fn drain(&self) -> Vec<Event> {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reading into a valid local buffer from our own non-blocking pipe.
            let n = unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n < buf.len() as isize {
                break;
            }
        }
        self.armed.store(false, Ordering::Release);
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        // SAFETY: both descriptors are ours and closed exactly once.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn one_wakeup_per_turn_and_none_lost() {
        let q = std::sync::Arc::new(EventQueue::new().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waker = q.clone();
        rt.block_on(async move {
            tokio::spawn(async move { waker.run_waker(Duration::ZERO).await });
            assert!(!readable(q.wake_fd()));
            q.push(Event::End { token: 1 });
            q.push(Event::End { token: 2 });
            assert!(!readable(q.wake_fd())); // not before the turn ends
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            assert!(readable(q.wake_fd()));
            let got: Vec<u64> = q.drain().iter().map(Event::token).collect();
            assert_eq!(got, vec![1, 2]);
            assert!(!readable(q.wake_fd()));
            q.push(Event::End { token: 3 });
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            assert!(readable(q.wake_fd()));
            q.push(Event::End { token: 4 }); // the reader is already woken: no second byte
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            assert_eq!(q.drain().len(), 2);
            assert!(!readable(q.wake_fd()));
            assert!(q.drain().is_empty());
            q.push_now(Event::End { token: 5 });
            assert!(readable(q.wake_fd()));
        });
    }

    /// Events arriving without pause: the reader is woken at most once per interval, and every
    /// event still reaches it.
    #[test]
    fn wakeups_under_load_are_spaced_by_the_interval() {
        let interval = Duration::from_millis(20);
        let q = std::sync::Arc::new(EventQueue::new().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let waker = q.clone();
        rt.block_on(async move {
            tokio::spawn(async move { waker.run_waker(interval).await });
            let started = Instant::now();
            let (mut wakeups, mut pushed, mut got) = (0u32, 0u64, 0u64);
            while started.elapsed() < Duration::from_millis(200) {
                q.push(Event::End { token: pushed });
                pushed += 1;
                tokio::task::yield_now().await;
                if readable(q.wake_fd()) {
                    wakeups += 1;
                    got += q.drain().len() as u64;
                }
            }
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            got += q.drain().len() as u64;
            assert_eq!(got, pushed);
            // 200 ms / 20 ms, plus the first two (an idle pool wakes at once) and the last.
            assert!(wakeups <= 13, "{wakeups} wake-ups for {pushed} events");
            assert!(wakeups >= 2, "the reader must still be woken: {wakeups}");
        });
    }

    /// A reader that sleeps in poll() until the pipe says so must get every event: no wake-up may
    /// be lost however pushes and drains interleave.
    #[test]
    fn no_event_is_stranded_under_concurrent_drains() {
        const N: u64 = 200_000;
        let q = std::sync::Arc::new(EventQueue::new().unwrap());
        let producer = q.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async move {
                let waker = producer.clone();
                tokio::spawn(async move { waker.run_waker(Duration::ZERO).await });
                for token in 0..N {
                    producer.push(Event::End { token });
                    if token % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                // Let the waker write for the last batch before the runtime goes.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
            });
        });
        let mut got = 0u64;
        while got < N {
            let mut pfd = libc::pollfd {
                fd: q.wake_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; 5 s is "lost" for this test.
            let ready = unsafe { libc::poll(&mut pfd, 1, 5000) };
            assert_eq!(ready, 1, "stranded after {got} of {N} events");
            got += q.drain().len() as u64;
        }
        thread.join().unwrap();
        assert_eq!(got, N);
    }
}
