//! One value read from storage once and kept until the operator changes
//! what it was read from (the settlement models, the configured oracles).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// The cached value and how many times it was forgotten, so that a read
/// that began before a [`Cached::forget`] is not kept after it.
pub struct Cached<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

struct Slot<T> {
    forgotten: u64,
    value: Option<Arc<T>>,
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached {
            slot: self.slot.clone(),
        }
    }
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            slot: Arc::new(Mutex::new(Slot {
                forgotten: 0,
                value: None,
            })),
        }
    }
}

impl<T> Cached<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kept value, or the one `load` reads (kept unless it was
    /// forgotten meanwhile).
    pub async fn get_or_load<E, F, Fut>(&self, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let forgotten = {
            let slot = self.lock();
            if let Some(value) = &slot.value {
                return Ok(value.clone());
            }
            slot.forgotten
        };
        let value = Arc::new(load().await?);
        let mut slot = self.lock();
        if slot.forgotten == forgotten {
            slot.value = Some(value.clone());
        }
        Ok(value)
    }

    /// Forgets the value: the next read loads it again.
    pub fn forget(&self) {
        let mut slot = self.lock();
        slot.forgotten += 1;
        slot.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load(value: u32) -> Result<u32, ()> {
        Ok(value)
    }

    #[tokio::test]
    async fn a_value_is_read_once_and_again_after_it_is_forgotten() {
        let cached = Cached::default();
        assert_eq!(*cached.get_or_load(|| load(1)).await.unwrap_or_default(), 1);
        assert_eq!(*cached.get_or_load(|| load(2)).await.unwrap_or_default(), 1);
        cached.forget();
        assert_eq!(*cached.get_or_load(|| load(3)).await.unwrap_or_default(), 3);
    }

    #[tokio::test]
    async fn a_read_that_began_before_a_change_is_not_kept() {
        let cached = Cached::default();
        let during = cached.clone();
        let first = cached
            .get_or_load(|| async move {
                during.forget();
                Ok::<u32, ()>(1)
            })
            .await;
        assert_eq!(first.map(|v| *v), Ok(1), "the caller still gets its read");
        assert_eq!(*cached.get_or_load(|| load(2)).await.unwrap_or_default(), 2);
    }

    #[tokio::test]
    async fn a_failed_read_keeps_nothing() {
        let cached: Cached<u32> = Cached::default();
        assert_eq!(
            cached.get_or_load(|| async { Err("down") }).await,
            Err("down")
        );
        assert_eq!(*cached.get_or_load(|| load(4)).await.unwrap_or_default(), 4);
    }
}
