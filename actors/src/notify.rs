//! Callbacks the business rules ask for, as domain values. The HTTP crate
//! renders them on the FSPIOP wire and delivers them; the rules never wait
//! for a delivery.

use std::fmt::Debug;

use crate::error::FspiopError;

/// A message received from a DFSP that the switch passes on unchanged: the
/// body byte for byte and the headers the far side needs (signature, URI,
/// method, tracing, source, destination, content type, date).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForwardedMessage {
    /// Shared: the message is cloned on its way (a redelivered ask, the
    /// callback queue) and its headers never change after it was received.
    pub headers: std::sync::Arc<Vec<(String, String)>>,
    pub body: bytes::Bytes,
}

/// Which registered endpoint a transfer callback goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEndpoint {
    /// FSPIOP_CALLBACK_URL_TRANSFER_POST
    Post,
    /// FSPIOP_CALLBACK_URL_TRANSFER_PUT (also used for PATCH)
    Put,
    /// FSPIOP_CALLBACK_URL_TRANSFER_ERROR
    Error,
}

/// The state of a transfer as the hub reports it (`PUT`/`PATCH /transfers/{ID}`).
#[derive(Debug, Clone, PartialEq)]
pub struct TransferStateBody {
    /// RECEIVED, RESERVED, COMMITTED or ABORTED.
    pub transfer_state: String,
    pub fulfilment: Option<String>,
    pub completed_timestamp: Option<String>,
}

/// One callback to one participant.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// Pass a DFSP's message on to `to`.
    Forward {
        to: String,
        transfer_id: String,
        endpoint: TransferEndpoint,
        method: &'static str,
        message: ForwardedMessage,
    },
    /// The hub's own `PUT` (or `PATCH`) with the transfer's state.
    State {
        to: String,
        transfer_id: String,
        patch: bool,
        body: TransferStateBody,
        content_version: String,
    },
    /// The hub's own `PUT /transfers/{ID}/error`.
    Error {
        to: String,
        transfer_id: String,
        error: FspiopError,
        content_version: String,
    },
    /// A DFSP's message on another resource, passed on unchanged.
    Route(Routed),
    /// The hub's own message on another resource.
    Hub(HubMessage),
}

/// Where a routed message goes: the recipient's endpoint of a type, its
/// `{{placeholders}}` substituted, plus an optional path appended (for types
/// whose URL is a base, such as FSPIOP_CALLBACK_URL_QUOTES).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub to: String,
    pub endpoint_type: &'static str,
    pub values: Vec<(&'static str, String)>,
    /// Path and query to append, e.g. `/quotes/{ID}/error`.
    pub path: Option<String>,
}

/// A DFSP's message on a resource other than transfers, passed on unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub target: Target,
    pub method: &'static str,
    pub message: ForwardedMessage,
}

/// A message the hub itself sends on a resource other than transfers (an
/// error callback, or the answer of a service the hub serves).
#[derive(Debug, Clone, PartialEq)]
pub struct HubMessage {
    pub target: Target,
    pub method: &'static str,
    /// FSPIOP-URI of the message, e.g. `/parties/MSISDN/123/error`.
    pub uri: String,
    /// The media type resource name, e.g. `parties`.
    pub resource: &'static str,
    pub body: bytes::Bytes,
    pub content_version: String,
}

/// Delivers notifications. Must not block: it queues and returns.
pub trait Notifier: Send + Sync + Debug {
    fn notify(&self, notification: Notification);
}
