//! State shared between a thread that changes it and one that waits for a
//! change: what the ack reader has read ([`super::acks`]), what the walk
//! has found ([`super::feed`]).
//!
//! A change wakes the other side only when it is waiting. Changes come one
//! per file, and a wake-up is a system call whether anyone waits or not:
//! for 10,000 small files that was 10,000 calls, nearly all for nobody.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A value under a lock, with waiting for it to change.
#[derive(Debug, Default)]
pub(super) struct Watch<T> {
    state: Mutex<Watched<T>>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Watched<T> {
    value: T,
    waiting: bool,
}

impl<T> Watch<T> {
    pub(super) fn new(value: T) -> Watch<T> {
        Watch {
            state: Mutex::new(Watched {
                value,
                waiting: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Changes the value, waking whoever waits for it.
    pub(super) fn update<R>(&self, change: impl FnOnce(&mut T) -> R) -> R {
        let mut state = lock(&self.state);
        let out = change(&mut state.value);
        let wake = std::mem::take(&mut state.waiting);
        drop(state);
        if wake {
            self.changed.notify_all();
        }
        out
    }

    /// Looks at the value as it is now.
    pub(super) fn read<R>(&self, look: impl FnOnce(&T) -> R) -> R {
        look(&lock(&self.state).value)
    }

    /// Waits until `ready` gives an answer. It is asked at once, after each
    /// change, and at least every `poll`, so that it can also give up on
    /// something the value does not show (a deadline, a stop flag).
    pub(super) fn wait<R>(&self, poll: Duration, mut ready: impl FnMut(&T) -> Option<R>) -> R {
        let mut state = lock(&self.state);
        loop {
            if let Some(answer) = ready(&state.value) {
                state.waiting = false;
                return answer;
            }
            state.waiting = true;
            state = self
                .changed
                .wait_timeout(state, poll)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Locks `mutex`, also when another thread panicked holding it: what it
/// guards here stays usable (counts, lists that only grow).
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    #[test]
    fn a_waiter_sees_changes_and_can_give_up_between_them() {
        let watch = Arc::new(Watch::new(0u32));
        let changer = {
            let watch = Arc::clone(&watch);
            thread::spawn(move || {
                for _ in 0..3 {
                    thread::sleep(Duration::from_millis(5));
                    watch.update(|n| *n += 1);
                }
            })
        };
        let poll = Duration::from_secs(5);
        assert_eq!(watch.wait(poll, |n| (*n == 3).then_some(*n)), 3);
        changer.join().expect("changer");
        // Nothing changes any more: the poll lets a deadline end the wait.
        let started = Instant::now();
        let until = started + Duration::from_millis(30);
        let gave_up = watch.wait(Duration::from_millis(5), |n| {
            (*n > 3 || Instant::now() >= until).then_some(*n > 3)
        });
        assert!(!gave_up);
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(watch.read(|n| *n), 3);
    }
}
