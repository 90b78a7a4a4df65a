//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use switch_actors::position::rules::PositionCommand;
use switch_actors::position::{PositionKey, PositionReply, PositionRequest, Positions};
use switch_actors::ErrorCode;
use switch_cluster::placement::Placement;
use switch_cluster::AskError;
use switch_config::Config;
use switch_storage::Store;

use switch_actors::participants::ParticipantCache;
use switch_actors::transfer::{deliver, TransferActor, TransferDirectory};
use switch_actors::FspiopError;

use crate::endpoints::EndpointCache;
use crate::errors::{ApiError, ApiResult};
use crate::fspiop::schema::Schemas;
use crate::metrics::Metrics;
use crate::notifier::HttpNotifier;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub positions: Arc<Positions>,
    /// Which node owns which slot (every slot local in the embedded default).
    pub placement: Arc<Placement>,
    /// Cluster mode: the node-to-node channel.
    pub peers: Option<crate::cluster::Peers>,
    pub transfers: Arc<TransferDirectory>,
    pub bulks: Arc<switch_actors::bulk::BulkDirectory>,
    /// Cluster mode: the expiry timers in Redis (their backlog is shown).
    pub redis_timers: Option<Arc<switch_cluster::timers::RedisTimers>>,
    /// Bulk lines' transfers, here or on their owners (`/internal/lines`).
    pub lines: Arc<switch_actors::transfer::Lines>,
    pub settlements: Arc<switch_actors::settlement::SettlementDirectory>,
    /// Admission of new transfers: live transfer actors
    /// (`transfers_in_flight_max`) and prepares being answered
    /// (`overload_prepare_wait_ms`).
    pub overload: crate::overload::Overload,
    pub participants: ParticipantCache,
    pub endpoints: EndpointCache,
    pub notifier: HttpNotifier,
    pub schemas: Arc<Schemas>,
    pub oracles: crate::oracle::Oracles,
    pub redis: Option<RedisProbe>,
    pub metrics: Metrics,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

fn unanswered(error: AskError) -> ApiError {
    match error {
        AskError::Timeout(_) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            "the switch did not finish in time; the request may still complete, repeat it to learn the outcome",
        ),
        AskError::Gone => ApiError::new(ErrorCode::InternalServerError, "actor stopped before answering"),
        AskError::Unavailable(why) => ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("not reachable now ({why}); retry later"),
        ),
    }
}

impl AppState {
    /// Sends a message to the actor of transfer `id` and waits for its durable answer.
    pub async fn ask_transfer<M>(&self, id: &str, message: M) -> ApiResult<()>
    where
        M: actix::Message<Result = Result<(), FspiopError>> + Clone + Send + 'static,
        TransferActor: actix::Handler<M>,
    {
        let timeout = Duration::from_millis(self.config.actor_reply_timeout_ms);
        match deliver(&self.transfers, id, message, timeout).await {
            Ok(answer) => answer.map_err(ApiError::from),
            Err(error) => Err(unanswered(error)),
        }
    }

    /// Forgets what is cached about a participant after the operator changed it.
    pub fn participant_changed(&self, name: &str) {
        self.participants.invalidate(name);
        self.endpoints.invalidate(name);
        self.announce_reference_change();
    }

    /// Forgets the settlement models after the operator changed one.
    pub fn models_changed(&self) {
        self.participants.models_changed();
        self.announce_reference_change();
    }

    /// Forgets the cached oracle endpoints after the operator changed one.
    pub fn oracles_changed(&self) {
        self.oracles.changed();
        self.announce_reference_change();
    }

    /// Cluster mode: tells the other nodes that reference data changed; each
    /// clears its caches at its next heartbeat (see `coordinator::beat`).
    fn announce_reference_change(&self) {
        if let (Some(redis), true) = (&self.redis, self.placement.is_cluster()) {
            redis.bump(switch_cluster::coordinator::reference_version_key(
                &self.config.cluster_name,
            ));
        }
    }

    /// Sends a command to the position actor of `participant` in `currency`
    /// and waits for its durable answer.
    pub async fn position(
        &self,
        participant: &str,
        currency: &str,
        command: PositionCommand,
    ) -> ApiResult<PositionReply> {
        let key = PositionKey {
            participant: participant.to_string(),
            currency: currency.to_string(),
        };
        let timeout = Duration::from_millis(self.config.actor_reply_timeout_ms);
        let request = PositionRequest::new(command);
        match self.positions.ask(&key, request, timeout).await {
            Ok(answer) => answer.map_err(ApiError::from),
            Err(error) => Err(unanswered(error)),
        }
    }
}

/// Checks that Redis answers, on the storage runtime that owns the client.
#[derive(Clone)]
pub struct RedisProbe {
    client: redis::Client,
    runtime: tokio::runtime::Handle,
}

impl RedisProbe {
    pub fn new(
        url: &str,
        runtime: tokio::runtime::Handle,
    ) -> Result<RedisProbe, redis::RedisError> {
        Ok(RedisProbe {
            client: redis::Client::open(url)?,
            runtime,
        })
    }

    /// INCR `key` in the background, bounded to one second; a failure is
    /// logged (the other nodes then see the change only when their caches
    /// are next invalidated).
    pub fn bump(&self, key: String) {
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let work = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("INCR")
                    .arg(&key)
                    .query_async::<i64>(&mut conn)
                    .await
            };
            match tokio::time::timeout(Duration::from_secs(1), work).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot announce a reference data change"),
                Err(_) => tracing::warn!("announcing a reference data change timed out"),
            }
        });
    }

    /// PING with a one-second bound.
    pub async fn ping(&self) -> Result<(), String> {
        let client = self.client.clone();
        let work = async move {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(format!("unexpected answer {pong}"))
            }
        };
        let bounded = async move {
            tokio::time::timeout(Duration::from_secs(1), work)
                .await
                .unwrap_or_else(|_| Err("no answer within 1s".into()))
        };
        self.runtime
            .spawn(bounded)
            .await
            .unwrap_or_else(|_| Err("runtime stopped".into()))
    }
}
