//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use switch_actors::position::rules::PositionCommand;
use switch_actors::position::{PositionDirectory, PositionKey, PositionReply, PositionRequest};
use switch_actors::ErrorCode;
use switch_cluster::{ask, AskError};
use switch_config::Config;
use switch_storage::Store;

use crate::errors::{ApiError, ApiResult};
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub positions: Arc<PositionDirectory>,
    pub redis: Option<RedisProbe>,
    pub metrics: Metrics,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

impl AppState {
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
        let addr = self.positions.get(&key);
        let timeout = Duration::from_millis(self.config.actor_reply_timeout_ms);
        match ask(&addr, PositionRequest(command), timeout).await {
            Ok(answer) => answer.map_err(ApiError::from),
            Err(AskError::Timeout(_)) => Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the position did not answer in time; the request may still complete, repeat it to learn the outcome",
            )),
            Err(AskError::Gone) => Err(ApiError::new(ErrorCode::InternalServerError, "position actor stopped")),
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
