//! Transfer expiry timers.
//!
//! The embedded default keeps them in process, ordered by expiry; cluster
//! mode keeps the same interface on Redis. A timer that fires only asks the
//! transfer to check its own expiry, so an early, late or repeated firing is
//! harmless: the transfer actor decides from its recorded state.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Expiry timers by transfer id.
pub trait Timers: Send + Sync {
    /// Arms (or re-arms) the timer of `id` for `at_ms` (ms since the epoch).
    fn schedule(&self, id: &str, at_ms: i64);
    /// Disarms it (the transfer became final).
    fn cancel(&self, id: &str, at_ms: i64);
    /// Removes and returns up to `max` ids due at `now_ms`, earliest first.
    fn take_due(&self, now_ms: i64, max: usize) -> Vec<String>;
    /// Timers armed.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-process timers (embedded default).
#[derive(Default)]
pub struct LocalTimers {
    armed: Mutex<BTreeSet<(i64, String)>>,
}

impl LocalTimers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, String)>> {
        self.armed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Timers for LocalTimers {
    fn schedule(&self, id: &str, at_ms: i64) {
        self.lock().insert((at_ms, id.to_string()));
    }

    fn cancel(&self, id: &str, at_ms: i64) {
        self.lock().remove(&(at_ms, id.to_string()));
    }

    fn take_due(&self, now_ms: i64, max: usize) -> Vec<String> {
        let mut armed = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match armed.first() {
                Some((at, _)) if *at <= now_ms => {
                    if let Some((_, id)) = armed.pop_first() {
                        due.push(id);
                    }
                }
                _ => break,
            }
        }
        due
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_once() {
        let timers = LocalTimers::default();
        timers.schedule("b", 20);
        timers.schedule("a", 10);
        timers.schedule("c", 30);
        timers.cancel("c", 30);
        assert_eq!(timers.take_due(5, 10), Vec::<String>::new());
        assert_eq!(timers.take_due(25, 1), vec!["a".to_string()]);
        assert_eq!(timers.take_due(25, 10), vec!["b".to_string()]);
        assert_eq!(timers.take_due(100, 10), Vec::<String>::new());
        assert!(timers.is_empty());
    }
}
