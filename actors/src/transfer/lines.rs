//! How a bulk reaches its line transfers, wherever they live.
//!
//! A bulk's lines are ordinary transfers, each owned by the node that owns
//! its slot. In the embedded default every line is local; in cluster mode a
//! line owned by another node gets its message as JSON on that node's
//! channel (`RemoteLines`, implemented in `http`), where the owner delivers
//! it to its own transfer actor, under its own fence.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switch_cluster::placement::{transfer_slot, Placement, Route};
use switch_cluster::AskError;

use super::rules::{ErrorMessage, FulfilMessage};
use super::{deliver, Expire, Fulfil, PayeeError, Prepare, TransferDirectory};
use crate::error::FspiopError;

/// What a bulk asks of one of its lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LineMessage {
    Prepare(Prepare),
    Fulfil(FulfilMessage),
    Abort(ErrorMessage),
    Expire,
}

/// The line's durable answer, or why it did not come.
pub type LineAnswer = Result<Result<(), FspiopError>, AskError>;
pub type RemoteLineAnswer = Pin<Box<dyn Future<Output = LineAnswer> + Send>>;

/// Sends a line's message to the node that owns the line.
pub trait RemoteLines: Send + Sync {
    fn ask(
        &self,
        address: &str,
        transfer_id: &str,
        message: &LineMessage,
        timeout: Duration,
    ) -> RemoteLineAnswer;
}

/// Every line transfer: the local actors of the slots this node owns, and
/// the owning node's for the rest.
pub struct Lines {
    local: Arc<TransferDirectory>,
    placement: Arc<Placement>,
    remote: Option<Arc<dyn RemoteLines>>,
}

impl Lines {
    pub fn new(
        local: Arc<TransferDirectory>,
        placement: Arc<Placement>,
        remote: Option<Arc<dyn RemoteLines>>,
    ) -> Lines {
        Lines {
            local,
            placement,
            remote,
        }
    }

    /// Delivers `message` to line `transfer_id`, here or on its owner, and
    /// waits for the durable answer.
    pub async fn deliver(
        &self,
        transfer_id: &str,
        message: LineMessage,
        timeout: Duration,
    ) -> LineAnswer {
        match self.placement.route(transfer_slot(transfer_id)) {
            Route::Local { .. } => self.deliver_here(transfer_id, message, timeout).await,
            Route::Remote { address, .. } => match &self.remote {
                Some(remote) => remote.ask(&address, transfer_id, &message, timeout).await,
                None => Err(AskError::Unavailable("no channel to other nodes".into())),
            },
            Route::Unavailable { .. } => {
                Err(AskError::Unavailable("the line's owner is changing".into()))
            }
        }
    }

    /// Delivers `message` to the local actor of line `transfer_id`; refused
    /// unless this node owns the line's slot (a message from a node whose
    /// view is older than ours).
    pub async fn deliver_here(
        &self,
        transfer_id: &str,
        message: LineMessage,
        timeout: Duration,
    ) -> LineAnswer {
        if !matches!(
            self.placement.route(transfer_slot(transfer_id)),
            Route::Local { .. }
        ) {
            return Err(AskError::Unavailable(format!(
                "{} does not own transfer {transfer_id}",
                self.placement.node()
            )));
        }
        let local = &self.local;
        match message {
            LineMessage::Prepare(m) => deliver(local, transfer_id, m, timeout).await,
            LineMessage::Fulfil(m) => deliver(local, transfer_id, Fulfil(m), timeout).await,
            LineMessage::Abort(m) => deliver(local, transfer_id, PayeeError(m), timeout).await,
            LineMessage::Expire => deliver(local, transfer_id, Expire, timeout).await,
        }
    }
}
