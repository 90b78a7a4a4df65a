//! The REST front door of mojaswitch and the `mojaswitch` binary's commands.
//!
//! Two listeners: the FSPIOP API for DFSPs and the operator API
//! (central-ledger admin, later settlement). Handlers translate HTTP into
//! storage reads and actor messages and back.
//!
//! Architecture invariant: `http` knows FSPIOP and HTTP, not SQL; it never
//! changes a balance itself, it asks the owning position actor.

pub mod cluster;
pub mod endpoints;
pub mod errors;
pub mod fspiop;
pub mod ilp;
pub mod json;
pub mod metrics;
pub mod notifier;
pub mod operator;
pub mod oracle;
pub mod overload;
pub mod server;
pub mod state;
