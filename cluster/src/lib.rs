//! Actor placement and addressing.
//!
//! Every participant position (and, from the transfers issue on, every
//! transfer) is an actix actor found through a [`Directory`] by its key, never
//! through a raw `Addr` kept elsewhere. In the embedded default the directory
//! is in-process: it starts the actor on one of a fixed set of arbiter threads
//! chosen by the key's hash, so work spreads over the cores while all
//! messages for one key are handled by one actor, in order. Cluster mode
//! replaces the lookup with Redis placement behind the same interface.
//!
//! Architecture invariant: `cluster` knows actix, Redis and node-to-node
//! transport, and nothing of the business rules; actors are built by a
//! factory handed in by `actors`.

pub mod coordinator;
pub mod placement;
#[cfg(test)]
mod simulation;
pub mod timers;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;

/// A fixed set of arbiter threads that actors are spread over.
pub struct Shards {
    arbiters: Vec<Arbiter>,
}

impl Shards {
    /// Starts `count` arbiter threads (at least one).
    pub fn start(count: usize) -> Shards {
        let arbiters = (0..count.max(1)).map(|_| Arbiter::new()).collect();
        Shards { arbiters }
    }

    fn handle(&self, index: usize) -> ArbiterHandle {
        self.arbiters[index % self.arbiters.len()].handle()
    }

    pub fn len(&self) -> usize {
        self.arbiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arbiters.is_empty()
    }

    /// Stops every arbiter thread after its queued work.
    pub fn stop(&self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

type Factory<K, A> = dyn Fn(&K) -> A + Send + Sync;

/// Finds or starts the one actor for a key.
pub struct Directory<K, A: Actor<Context = Context<A>>> {
    shards: Arc<Shards>,
    actors: Mutex<HashMap<K, Addr<A>>>,
    factory: Box<Factory<K, A>>,
    mailbox_capacity: usize,
    hasher: std::collections::hash_map::RandomState,
    sweep_at: std::sync::atomic::AtomicUsize,
}

/// Deliveries of one message at most (see [`Directory::ask`]).
const REDELIVERIES_MAX: u32 = 3;

/// Entries below which the directory never sweeps.
const SWEEP_MIN: usize = 1024;

impl<K, A> Directory<K, A>
where
    K: Hash + Eq + Clone + Send + 'static,
    A: Actor<Context = Context<A>> + Send,
{
    /// `factory` builds the actor for a key; it runs on the caller's thread and
    /// the actor then starts on its shard with `mailbox_capacity`.
    pub fn new(
        shards: Arc<Shards>,
        mailbox_capacity: usize,
        factory: impl Fn(&K) -> A + Send + Sync + 'static,
    ) -> Self {
        Directory {
            shards,
            actors: Mutex::new(HashMap::new()),
            factory: Box::new(factory),
            mailbox_capacity,
            hasher: Default::default(),
            sweep_at: std::sync::atomic::AtomicUsize::new(SWEEP_MIN),
        }
    }

    /// The live actor for `key`, started if there is none (or it stopped).
    pub fn get(&self, key: &K) -> Addr<A> {
        let mut actors = self
            .actors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(addr) = actors.get(key) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let shard = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let actor = (self.factory)(key);
        let capacity = self.mailbox_capacity;
        let addr = A::start_in_arbiter(&self.shards.handle(shard), move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            actor
        });
        actors.insert(key.clone(), addr.clone());
        // Stopped actors leave their entry behind; sweep when the map has
        // doubled since the last sweep, so the cost stays amortised O(1).
        if actors.len() > self.sweep_at.load(std::sync::atomic::Ordering::Relaxed) {
            actors.retain(|_, addr| addr.connected());
            self.sweep_at.store(
                (actors.len() * 2).max(SWEEP_MIN),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        addr
    }

    /// Sends `msg` to the actor for `key` and waits at most `timeout` for
    /// its answer. An actor that stops once its work is done may leave a
    /// message unhandled in its mailbox; that message goes again to a fresh
    /// actor for the key, a bounded number of times.
    pub async fn ask<M>(&self, key: &K, msg: M, timeout: Duration) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Clone + Send + 'static,
        M::Result: Send,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match ask(&self.get(key), msg.clone(), timeout).await {
                Err(AskError::Gone) if attempts < REDELIVERIES_MAX => continue,
                answer => return answer,
            }
        }
    }

    /// Forgets the actors whose key matches: each finishes what its
    /// mailbox holds and stops once nothing refers to it; the next message
    /// for such a key starts a fresh actor.
    pub fn forget_where(&self, matches: impl Fn(&K) -> bool) {
        let mut actors = self
            .actors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        actors.retain(|key, _| !matches(key));
    }

    /// Number of actors known (live or not yet collected).
    pub fn len(&self) -> usize {
        self.actors.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an actor did not answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AskError {
    #[error("actor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("actor stopped before answering")]
    Gone,
    /// Cluster mode: no live owner, or its node did not take the message.
    #[error("owner unavailable: {0}")]
    Unavailable(String),
}

/// Sends `msg` and waits for the answer at most `timeout`.
///
/// The send runs in its own task: if the caller is dropped (an HTTP client
/// disconnects), the message is still delivered and handled, never cancelled
/// half-way.
pub async fn ask<A, M>(addr: &Addr<A>, msg: M, timeout: Duration) -> Result<M::Result, AskError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    let sent = addr.send(msg);
    let task = actix::spawn(sent);
    match tokio::time::timeout(timeout, task).await {
        Err(_) => Err(AskError::Timeout(timeout)),
        Ok(Err(_)) | Ok(Ok(Err(_))) => Err(AskError::Gone),
        Ok(Ok(Ok(answer))) => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        key: u32,
        count: u32,
    }
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "Count")]
    struct Bump;
    #[derive(Debug, PartialEq, MessageResponse)]
    struct Count(u32, u32);
    impl Handler<Bump> for Counter {
        type Result = Count;
        fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> Count {
            self.count += 1;
            Count(self.key, self.count)
        }
    }

    #[actix::test]
    async fn one_actor_per_key_across_shards() {
        let shards = Arc::new(Shards::start(2));
        let directory = Directory::new(shards.clone(), 16, |key: &u32| Counter {
            key: *key,
            count: 0,
        });
        for round in 1..=3 {
            for key in 0..4u32 {
                let answer = ask(&directory.get(&key), Bump, Duration::from_secs(5))
                    .await
                    .expect("answer");
                assert_eq!(answer, Count(key, round), "same actor keeps its state");
            }
        }
        assert_eq!(directory.len(), 4);
        shards.stop();
    }
}
