//! Transfer rules as plain functions: no I/O, no clock (time is passed in).
//!
//! The transfer actor asks these functions what to do with each message and
//! carries out the answer: which position command to send, what to record,
//! and who gets which callback (the notification matrix of the reference hub,
//! hub-behaviour.md section 4.7).

use base64::Engine;
use rust_decimal::Decimal;
use sha2::Digest;
use switch_storage::transfers::{NewTransfer, TransferRecord};

use crate::error::{ErrorCode, FspiopError};
use crate::notify::{ForwardedMessage, Notification, TransferEndpoint, TransferStateBody};
use crate::participants::ParticipantSnapshot;

/// A completedTimestamp may be this far in the future (clock drift), as the reference.
pub const COMPLETED_FUTURE_MS_MAX: i64 = 200;
/// ...and at most this old.
pub const COMPLETED_PAST_MS_MAX: i64 = 300_000;

/// Internal states (the reference hub's transferState seeds).
pub mod state {
    pub const RECEIVED_PREPARE: &str = "RECEIVED_PREPARE";
    pub const RESERVED: &str = "RESERVED";
    pub const RECEIVED_FULFIL: &str = "RECEIVED_FULFIL";
    pub const COMMITTED: &str = "COMMITTED";
    pub const ABORTED_REJECTED: &str = "ABORTED_REJECTED";
    pub const RECEIVED_ERROR: &str = "RECEIVED_ERROR";
    pub const ABORTED_ERROR: &str = "ABORTED_ERROR";
    pub const EXPIRED_PREPARED: &str = "EXPIRED_PREPARED";
    pub const RESERVED_TIMEOUT: &str = "RESERVED_TIMEOUT";
    pub const EXPIRED_RESERVED: &str = "EXPIRED_RESERVED";
    pub const INVALID: &str = "INVALID";
    pub const SETTLED: &str = "SETTLED";
}

/// The API enumeration of an internal state.
pub fn api_state(internal: &str) -> &'static str {
    match internal {
        state::RECEIVED_PREPARE => "RECEIVED",
        state::RESERVED
        | state::RECEIVED_FULFIL
        | state::RECEIVED_ERROR
        | state::RESERVED_TIMEOUT => "RESERVED",
        // FSPIOP has no SETTLED: a transfer settled gross is COMMITTED to DFSPs.
        state::COMMITTED | state::SETTLED => "COMMITTED",
        _ => "ABORTED",
    }
}

/// A transfer as the actor holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub record: std::sync::Arc<NewTransfer>,
    pub state: String,
    pub fulfilment: Option<String>,
    pub completed_timestamp: Option<String>,
    pub fulfil_hash: Option<String>,
    pub error_hash: Option<String>,
}

impl Transfer {
    pub fn from_record(record: TransferRecord) -> Transfer {
        Transfer {
            record: std::sync::Arc::new(record.transfer),
            state: record.state,
            fulfilment: record.fulfilment,
            completed_timestamp: record.completed_timestamp,
            fulfil_hash: record.fulfil_hash,
            error_hash: record.error_hash,
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(api_state(&self.state), "COMMITTED" | "ABORTED")
    }

    pub fn id(&self) -> &str {
        &self.record.transfer_id
    }

    /// The hub's own statement of this transfer's state.
    pub fn state_body(&self) -> TransferStateBody {
        let committed = matches!(api_state(&self.state), "COMMITTED");
        TransferStateBody {
            transfer_state: api_state(&self.state).to_string(),
            fulfilment: self.fulfilment.clone().filter(|_| committed),
            completed_timestamp: self.completed_timestamp.clone(),
        }
    }

    pub fn state_to(&self, to: &str, patch: bool) -> Notification {
        Notification::State {
            to: to.into(),
            transfer_id: self.id().into(),
            patch,
            body: self.state_body(),
            content_version: self.record.content_version.clone(),
        }
    }

    pub fn error_to(&self, to: &str, error: FspiopError) -> Notification {
        error_to(to, self.id(), error, &self.record.content_version)
    }
}

pub fn error_to(
    to: &str,
    transfer_id: &str,
    error: FspiopError,
    content_version: &str,
) -> Notification {
    Notification::Error {
        to: to.into(),
        transfer_id: transfer_id.into(),
        error,
        content_version: content_version.into(),
    }
}

fn validation(detail: impl Into<String>) -> FspiopError {
    FspiopError::new(ErrorCode::GenericValidationError, detail)
}

/// base64url(SHA-256(fulfilment)) when the fulfilment decodes to 32 bytes.
pub fn condition_of(fulfilment: &str) -> Option<String> {
    let bytes = decode_base64url(fulfilment)?;
    if bytes.len() != 32 {
        return None;
    }
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&bytes)))
}

/// Decodes base64url with or without padding.
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Settings of the transfer rules.
#[derive(Debug, Clone, Copy)]
pub struct TransferSettings {
    /// ENABLE_ON_US_TRANSFERS: payer and payee may be the same participant.
    pub on_us_enabled: bool,
    /// SEND_TRANSFER_CONFIRMATION_TO_PAYEE: the payee gets a copy of the commit.
    pub confirm_to_payee: bool,
}

/// The prepare checks of the reference hub (section 4.2), in its order.
pub fn validate_prepare(
    transfer: &NewTransfer,
    source: &str,
    payer: Option<&ParticipantSnapshot>,
    payee: Option<&ParticipantSnapshot>,
    now_ms: i64,
    settings: TransferSettings,
) -> Result<(), FspiopError> {
    if source != transfer.payer_fsp {
        return Err(validation(
            "FSPIOP-Source header does not match the payer FSP",
        ));
    }
    if transfer.amount.normalize().scale() > 4 || switch_storage::to_units(transfer.amount).is_err()
    {
        return Err(validation(
            "amount exceeds the allowed scale (4) or precision (18)",
        ));
    }
    if transfer.amount <= Decimal::ZERO {
        return Err(validation("amount must be positive"));
    }
    let payer = match payer {
        Some(p) if p.is_active => p,
        Some(_) => {
            return Err(validation(format!(
                "payer FSP {} is inactive",
                transfer.payer_fsp
            )))
        }
        None => {
            return Err(validation(format!(
                "payer FSP {} does not exist",
                transfer.payer_fsp
            )))
        }
    };
    let payee = match payee {
        Some(p) if p.is_active => p,
        Some(_) => {
            return Err(validation(format!(
                "payee FSP {} is inactive",
                transfer.payee_fsp
            )))
        }
        None => {
            return Err(validation(format!(
                "payee FSP {} does not exist",
                transfer.payee_fsp
            )))
        }
    };
    if decode_base64url(&transfer.condition).map(|c| c.len()) != Some(32) {
        return Err(validation("condition is not a 32-byte value"));
    }
    if transfer.expiration_ms <= now_ms {
        return Err(validation("expiration date is in the past"));
    }
    if payer.name == payee.name && !settings.on_us_enabled {
        return Err(validation(
            "payer FSP and payee FSP must differ (on-us transfers are disabled)",
        ));
    }
    for (role, participant) in [("payer", payer), ("payee", payee)] {
        match participant.position_account(&transfer.currency) {
            Some(account) if account.is_active => {}
            Some(_) => {
                return Err(validation(format!(
                    "{role} FSP {} account in {} is inactive",
                    participant.name, transfer.currency
                )))
            }
            None => {
                return Err(validation(format!(
                    "{role} FSP {} has no account in {}",
                    participant.name, transfer.currency
                )))
            }
        }
    }
    Ok(())
}

/// What to do with a prepare for an id the switch already has (section 3.2).
pub fn on_duplicate_prepare(transfer: &Transfer, hash: &str, source: &str) -> Vec<Notification> {
    let payer = transfer.record.payer_fsp.clone();
    if source != payer {
        // Someone else reusing the id learns nothing about the transfer.
        return vec![transfer.error_to(
            source,
            FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a transfer with this id already exists",
            ),
        )];
    }
    if transfer.record.prepare_hash != hash {
        return vec![transfer.error_to(
            &payer,
            FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a transfer with this id exists with a different prepare",
            ),
        )];
    }
    match api_state(&transfer.state) {
        "RECEIVED" => Vec::new(),
        _ => vec![transfer.state_to(&payer, false)],
    }
}

/// A PUT /transfers/{ID} from a DFSP.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FulfilMessage {
    pub source: String,
    pub destination: Option<String>,
    pub hash: String,
    pub transfer_state: String,
    pub fulfilment: Option<String>,
    pub completed_timestamp: Option<String>,
    /// `completedTimestamp` in ms since the epoch, when it parsed.
    pub completed_ms: Option<i64>,
    pub content_version: String,
    pub forward: ForwardedMessage,
}

/// What the actor does with a fulfil.
#[derive(Debug, Clone, PartialEq)]
pub enum FulfilAction {
    /// Nothing changes; send these (possibly none).
    Reply(Vec<Notification>),
    /// Commit on the payee's position, then notify.
    Commit { patch: bool },
    /// Abort: give the reservation back, tell payer and payee.
    Abort { error: FspiopError, patch: bool },
    /// The transfer expired: run the timeout now.
    Expire { patch: bool },
}

/// The fulfil checks of the reference hub (section 4.3), in its order.
pub fn on_fulfil(transfer: &Transfer, message: &FulfilMessage, now_ms: i64) -> FulfilAction {
    let payee = transfer.record.payee_fsp.as_str();
    let reply =
        |error: FspiopError| FulfilAction::Reply(vec![transfer.error_to(&message.source, error)]);
    let patch = message.transfer_state == "RESERVED";
    if patch && message.content_version.starts_with("1.0") {
        // The reference drops it silently; the timeout will abort the transfer.
        return FulfilAction::Reply(Vec::new());
    }
    if message.source != payee {
        // Only the payee may fulfil; a stranger's message changes nothing.
        return reply(validation(
            "FSPIOP-Source does not match the payee of this transfer",
        ));
    }
    if message.destination.as_deref() != Some(transfer.record.payer_fsp.as_str()) {
        return reply(validation(
            "FSPIOP-Destination does not match the payer of this transfer",
        ));
    }
    match &transfer.fulfil_hash {
        Some(seen) if *seen == message.hash => {
            return if transfer.is_final() {
                FulfilAction::Reply(vec![transfer.state_to(payee, false)])
            } else {
                FulfilAction::Reply(Vec::new())
            };
        }
        Some(_) => {
            return reply(FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a different fulfil was already received for this transfer",
            ))
        }
        None => {}
    }
    if message.transfer_state == "ABORTED" {
        // ABORTED is not valid in a PUT (v1.1 note 6.7.4.1): logged and ignored.
        return FulfilAction::Reply(Vec::new());
    }
    if !matches!(message.transfer_state.as_str(), "COMMITTED" | "RESERVED") {
        return reply(validation("transferState must be COMMITTED or RESERVED"));
    }
    let Some(fulfilment) = &message.fulfilment else {
        return reply(FspiopError::new(
            ErrorCode::MissingMandatoryElement,
            "fulfilment is required",
        ));
    };
    let matches_condition =
        condition_of(fulfilment).as_deref() == Some(transfer.record.condition.as_str());
    if transfer.state != state::RESERVED {
        let error = if matches!(
            transfer.state.as_str(),
            state::EXPIRED_RESERVED | state::EXPIRED_PREPARED
        ) {
            FspiopError::new(ErrorCode::TransferExpired, "the transfer has expired")
        } else {
            validation(format!(
                "transfer is {}, not RESERVED",
                api_state(&transfer.state)
            ))
        };
        let mut out = vec![transfer.error_to(payee, error)];
        if patch {
            out.push(transfer.state_to(payee, true));
        }
        return FulfilAction::Reply(out);
    }
    if !matches_condition {
        return FulfilAction::Abort {
            error: validation("invalid fulfilment"),
            patch,
        };
    }
    if transfer.record.expiration_ms <= now_ms {
        return FulfilAction::Expire { patch };
    }
    match message.completed_ms {
        Some(at) if at > now_ms + COMPLETED_FUTURE_MS_MAX => FulfilAction::Abort {
            error: validation("completedTimestamp is in the future"),
            patch,
        },
        Some(at) if at < now_ms - COMPLETED_PAST_MS_MAX => FulfilAction::Abort {
            error: validation("completedTimestamp is too old"),
            patch,
        },
        _ => FulfilAction::Commit { patch },
    }
}

/// Who gets what after a commit.
pub fn after_commit(
    transfer: &Transfer,
    message: &FulfilMessage,
    patch: bool,
    settings: TransferSettings,
) -> Vec<Notification> {
    let payer = transfer.record.payer_fsp.clone();
    let payee = transfer.record.payee_fsp.clone();
    if patch {
        // The payee asked for a commit notification: the payer gets the hub's
        // PUT, the payee a PATCH with the final state.
        return vec![
            transfer.state_to(&payer, false),
            transfer.state_to(&payee, true),
        ];
    }
    let mut out = vec![Notification::Forward {
        to: payer.clone(),
        transfer_id: transfer.id().into(),
        endpoint: TransferEndpoint::Put,
        method: "PUT",
        message: message.forward.clone(),
    }];
    if settings.confirm_to_payee && payer != payee {
        out.push(transfer.state_to(&payee, false));
    }
    out
}

/// Who gets what after an abort caused by the payee's own invalid fulfil.
pub fn after_invalid_fulfil(
    transfer: &Transfer,
    error: &FspiopError,
    patch: bool,
) -> Vec<Notification> {
    let payee = transfer.record.payee_fsp.as_str();
    let mut out = vec![
        transfer.error_to(&transfer.record.payer_fsp, error.clone()),
        transfer.error_to(payee, error.clone()),
    ];
    if patch {
        out.push(transfer.state_to(payee, true));
    }
    out
}

/// Who gets what after a reserved transfer expired.
pub fn after_expiry(transfer: &Transfer, patch: bool) -> Vec<Notification> {
    let error = FspiopError::new(
        ErrorCode::TransferExpired,
        "the transfer expired before it was fulfilled",
    );
    let payee = transfer.record.payee_fsp.as_str();
    let mut out = vec![
        transfer.error_to(&transfer.record.payer_fsp, error.clone()),
        transfer.error_to(payee, error),
    ];
    if patch {
        out.push(transfer.state_to(payee, true));
    }
    out
}

/// A PUT /transfers/{ID}/error from a DFSP.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorMessage {
    pub source: String,
    pub hash: String,
    pub error_code: String,
    pub error_description: String,
    pub content_version: String,
    pub forward: ForwardedMessage,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ErrorAction {
    Reply(Vec<Notification>),
    /// Give the reservation back and pass the payee's error to the payer.
    Abort,
}

/// Error codes a DFSP may send: the categories of the spec (section 7.6).
/// Codes xx40 and above are scheme-specific and read as their xx00.
pub fn is_spec_error_code(code: &str) -> bool {
    let Ok(number) = code.parse::<u16>() else {
        return false;
    };
    if code.len() != 4 {
        return false;
    }
    let category = number / 100;
    matches!(
        category,
        10 | 20 | 30 | 31 | 32 | 33 | 40 | 41 | 42 | 43 | 44 | 50 | 51 | 52 | 53 | 54
    )
}

pub fn on_payee_error(transfer: &Transfer, message: &ErrorMessage) -> ErrorAction {
    let reply =
        |error: FspiopError| ErrorAction::Reply(vec![transfer.error_to(&message.source, error)]);
    if message.source != transfer.record.payee_fsp {
        return reply(validation(
            "FSPIOP-Source does not match the payee of this transfer",
        ));
    }
    match &transfer.error_hash {
        Some(seen) if *seen == message.hash => {
            return if transfer.is_final() {
                ErrorAction::Reply(vec![transfer.state_to(&transfer.record.payee_fsp, false)])
            } else {
                ErrorAction::Reply(Vec::new())
            };
        }
        Some(_) => {
            return reply(FspiopError::new(
                ErrorCode::ModifiedRequest,
                "a different error was already received for this transfer",
            ))
        }
        None => {}
    }
    if !is_spec_error_code(&message.error_code) {
        return reply(validation(format!(
            "API specification undefined errorCode {}",
            message.error_code
        )));
    }
    if transfer.state != state::RESERVED {
        return reply(validation(format!(
            "transfer is {}, not RESERVED",
            api_state(&transfer.state)
        )));
    }
    ErrorAction::Abort
}

/// GET /transfers/{ID}: only payer or payee may ask.
pub fn on_get(
    transfer: Option<&Transfer>,
    transfer_id: &str,
    source: &str,
    content_version: &str,
) -> Notification {
    match transfer {
        None => error_to(
            source,
            transfer_id,
            FspiopError::new(
                ErrorCode::TransferIdNotFound,
                format!("transfer {transfer_id} does not exist"),
            ),
            content_version,
        ),
        Some(t) if source != t.record.payer_fsp && source != t.record.payee_fsp => t.error_to(
            source,
            FspiopError::new(
                ErrorCode::GenericClientError,
                "only the payer or the payee may query a transfer",
            ),
        ),
        Some(t) => t.state_to(source, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::participants::AccountSnapshot;

    const FULFILMENT: &str = "UNlJ98hZTY_dsw0cAqw4i_UN3v4utt7CZFB4yfLbVFA";

    fn condition() -> String {
        condition_of(FULFILMENT).expect("32 bytes")
    }

    fn record(now_ms: i64) -> NewTransfer {
        NewTransfer {
            transfer_id: "t1".into(),
            payer_fsp: "payer".into(),
            payee_fsp: "payee".into(),
            amount: Decimal::from(10),
            currency: "USD".into(),
            condition: condition(),
            expiration: "later".into(),
            expiration_ms: now_ms + 60_000,
            ilp_packet: "AQ".into(),
            prepare_hash: "h".into(),
            content_version: "1.1".into(),
            bulk_transfer_id: None,
        }
    }

    fn participant(name: &str, active: bool) -> ParticipantSnapshot {
        ParticipantSnapshot {
            name: name.into(),
            is_active: active,
            accounts: vec![AccountSnapshot {
                currency: "USD".into(),
                ledger_account_type: "POSITION".into(),
                is_active: true,
            }],
        }
    }

    const SETTINGS: TransferSettings = TransferSettings {
        on_us_enabled: false,
        confirm_to_payee: true,
    };

    #[test]
    fn prepare_checks_run_in_the_reference_order() {
        let now = 1_000_000;
        let t = record(now);
        let (payer, payee) = (participant("payer", true), participant("payee", true));
        assert_eq!(
            validate_prepare(&t, "payer", Some(&payer), Some(&payee), now, SETTINGS),
            Ok(())
        );
        let check = |t: &NewTransfer,
                     source: &str,
                     payer: Option<&ParticipantSnapshot>,
                     payee: Option<&ParticipantSnapshot>| {
            validate_prepare(t, source, payer, payee, now, SETTINGS)
                .unwrap_err()
                .detail
        };
        assert!(check(&t, "payee", Some(&payer), Some(&payee)).contains("FSPIOP-Source"));
        assert!(check(&t, "payer", None, Some(&payee)).contains("payer FSP payer does not exist"));
        assert!(check(
            &t,
            "payer",
            Some(&participant("payer", false)),
            Some(&payee)
        )
        .contains("inactive"));
        assert!(check(&t, "payer", Some(&payer), None).contains("payee FSP payee does not exist"));
        let mut bad = t.clone();
        bad.condition = "abc".into();
        assert!(check(&bad, "payer", Some(&payer), Some(&payee)).contains("condition"));
        let mut late = t.clone();
        late.expiration_ms = now - 1;
        assert!(check(&late, "payer", Some(&payer), Some(&payee)).contains("expiration"));
        let mut on_us = t.clone();
        on_us.payee_fsp = "payer".into();
        assert!(check(&on_us, "payer", Some(&payer), Some(&payer)).contains("must differ"));
        let mut eur = t;
        eur.currency = "EUR".into();
        assert!(check(&eur, "payer", Some(&payer), Some(&payee)).contains("no account in EUR"));
    }

    fn reserved(now_ms: i64) -> Transfer {
        Transfer {
            record: std::sync::Arc::new(record(now_ms)),
            state: state::RESERVED.into(),
            fulfilment: None,
            completed_timestamp: None,
            fulfil_hash: None,
            error_hash: None,
        }
    }

    fn fulfil(now_ms: i64, state: &str, fulfilment: &str) -> FulfilMessage {
        FulfilMessage {
            source: "payee".into(),
            destination: Some("payer".into()),
            hash: "f".into(),
            transfer_state: state.into(),
            fulfilment: Some(fulfilment.into()),
            completed_timestamp: Some("now".into()),
            completed_ms: Some(now_ms),
            content_version: "1.1".into(),
            forward: ForwardedMessage {
                headers: Default::default(),
                body: bytes::Bytes::from_static(b"{}"),
            },
        }
    }

    #[test]
    fn fulfil_decisions() {
        let now = 5_000_000;
        let t = reserved(now);
        assert_eq!(
            on_fulfil(&t, &fulfil(now, "COMMITTED", FULFILMENT), now),
            FulfilAction::Commit { patch: false }
        );
        assert_eq!(
            on_fulfil(&t, &fulfil(now, "RESERVED", FULFILMENT), now),
            FulfilAction::Commit { patch: true }
        );
        let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            on_fulfil(&t, &fulfil(now, "COMMITTED", wrong), now),
            FulfilAction::Abort { .. }
        ));
        assert_eq!(
            on_fulfil(&t, &fulfil(now, "COMMITTED", FULFILMENT), now + 60_000),
            FulfilAction::Expire { patch: false }
        );
        assert_eq!(
            on_fulfil(&t, &fulfil(now, "ABORTED", FULFILMENT), now),
            FulfilAction::Reply(vec![])
        );
        let mut v10 = fulfil(now, "RESERVED", FULFILMENT);
        v10.content_version = "1.0".into();
        assert_eq!(on_fulfil(&t, &v10, now), FulfilAction::Reply(vec![]));
        let mut stranger = fulfil(now, "COMMITTED", FULFILMENT);
        stranger.source = "mallory".into();
        match on_fulfil(&t, &stranger, now) {
            FulfilAction::Reply(out) => {
                assert!(matches!(&out[..], [Notification::Error { to, .. }] if to == "mallory"))
            }
            other => panic!("{other:?}"),
        }
        let mut committed = t.clone();
        committed.state = state::COMMITTED.into();
        committed.fulfil_hash = Some("f".into());
        assert!(
            matches!(on_fulfil(&committed, &fulfil(now, "COMMITTED", FULFILMENT), now), FulfilAction::Reply(v) if v.len() == 1)
        );
        let mut modified = fulfil(now, "COMMITTED", FULFILMENT);
        modified.hash = "other".into();
        match on_fulfil(&committed, &modified, now) {
            FulfilAction::Reply(out) => assert!(
                matches!(&out[0], Notification::Error { error, .. } if error.code == ErrorCode::ModifiedRequest)
            ),
            other => panic!("{other:?}"),
        }
        let mut old = fulfil(now, "COMMITTED", FULFILMENT);
        old.completed_ms = Some(now - COMPLETED_PAST_MS_MAX - 1);
        assert!(matches!(
            on_fulfil(&t, &old, now),
            FulfilAction::Abort { .. }
        ));
    }

    #[test]
    fn error_codes_follow_the_spec_categories() {
        assert!(is_spec_error_code("5100"));
        assert!(is_spec_error_code("4001"));
        assert!(is_spec_error_code("5142"));
        assert!(!is_spec_error_code("9999"));
        assert!(!is_spec_error_code("12"));
        assert!(!is_spec_error_code("abcd"));
    }

    #[test]
    fn get_rules() {
        let t = reserved(0);
        assert!(matches!(
            on_get(Some(&t), "t1", "payer", "1.1"),
            Notification::State { .. }
        ));
        assert!(
            matches!(on_get(Some(&t), "t1", "other", "1.1"), Notification::Error { error, .. } if error.code == ErrorCode::GenericClientError)
        );
        assert!(
            matches!(on_get(None, "t1", "payer", "1.1"), Notification::Error { error, .. } if error.code == ErrorCode::TransferIdNotFound)
        );
    }
}
