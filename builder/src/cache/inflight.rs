//! Steps in flight: while one thread runs the step of a cache key, another that reaches the
//! same key waits for its record instead of running the step again — how the platforms of
//! one build share the stages they have in common (a builder pinned to $BUILDPLATFORM).

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};

use super::Key;

/// The keys being computed now.
#[derive(Debug, Default)]
pub struct Inflight {
    keys: Mutex<HashSet<Key>>,
    released: Condvar,
}

/// A key this thread computes; released (waking the waiters) when dropped.
#[derive(Debug)]
pub struct Claim {
    inflight: Arc<Inflight>,
    key: Key,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut keys) = self.inflight.keys.lock() {
            keys.remove(&self.key);
        }
        self.inflight.released.notify_all();
    }
}

/// What `Inflight::claim` did.
#[derive(Debug)]
pub enum Claimed {
    /// Nobody was computing the key: now the caller is.
    Mine(Claim),
    /// Another thread was, and has finished or given up: look in the cache again.
    Waited,
}

impl Inflight {
    /// Claims `key`, or waits until whoever holds it lets go. A thread holds at most one
    /// claim and waits holding none (see `StageState::use_cached`), so no two wait for
    /// each other.
    pub fn claim(self: &Arc<Self>, key: &Key) -> Claimed {
        let Ok(mut keys) = self.keys.lock() else {
            // A poisoned set: run the step, as without sharing.
            return Claimed::Waited;
        };
        if keys.insert(*key) {
            return Claimed::Mine(Claim {
                inflight: self.clone(),
                key: *key,
            });
        }
        while keys.contains(key) {
            keys = match self.released.wait(keys) {
                Ok(k) => k,
                Err(_) => return Claimed::Waited,
            };
        }
        Claimed::Waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn one_thread_runs_a_key_and_the_others_wait_for_it() {
        let inflight = Arc::new(Inflight::default());
        let key = Key::root();
        let ran = AtomicUsize::new(0);
        let done = Mutex::new(false);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    loop {
                        if *done.lock().unwrap() {
                            return;
                        }
                        match inflight.claim(&key) {
                            Claimed::Mine(_claim) => {
                                std::thread::sleep(std::time::Duration::from_millis(50));
                                ran.fetch_add(1, Ordering::SeqCst);
                                *done.lock().unwrap() = true;
                                return;
                            }
                            Claimed::Waited => {}
                        }
                    }
                });
            }
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // Released: the key can be claimed again.
        assert!(matches!(inflight.claim(&key), Claimed::Mine(_)));
    }
}
