//! mojaswitch business rules, carried by actix actors.
//!
//! Each kind of actor keeps its rules in a plain state machine (`rules`
//! modules: no I/O, no clock, no actix) and the actor only carries messages,
//! reads its starting state, and writes the decided rows through
//! `switch-storage` before it answers.
//!
//! Architecture invariants: `actors` knows no HTTP and no SQL; every actor is
//! reached through a `switch-cluster` directory, never a raw `Addr` kept
//! elsewhere.

pub mod bulk;
pub mod cached;
pub mod error;
pub mod notify;
pub mod participants;
pub mod position;
pub mod settlement;
pub mod transfer;

pub use error::{ErrorCode, FspiopError};
