//! The closed set of FSPIOP error codes the switch raises, with their spec
//! names. The HTTP front door maps each to a status and an `errorInformation`
//! body in one place (`switch-http`'s `errors` module).

use std::fmt;

/// FSPIOP error codes (API Definition v1.1 section 7.6, plus the Mojaloop
/// scheme-range codes the reference hub uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    CommunicationError,
    InternalServerError,
    NotImplemented,
    ServiceUnavailable,
    ServerBusy,
    GenericClientError,
    UnacceptableVersion,
    UnknownUri,
    AddPartyInformationError,
    DeletePartyInformationError,
    MethodNotAllowed,
    GenericValidationError,
    MalformedSyntax,
    MissingMandatoryElement,
    TooManyElements,
    TooLargePayload,
    ModifiedRequest,
    GenericIdNotFound,
    DestinationFspError,
    PayerFspIdNotFound,
    PayeeFspIdNotFound,
    PartyNotFound,
    TransferIdNotFound,
    BulkTransferIdNotFound,
    TransferExpired,
    PayerInsufficientLiquidity,
    PayerLimitError,
    GenericSettlementError,
}

impl ErrorCode {
    /// The four-digit code.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::CommunicationError => "1000",
            ErrorCode::InternalServerError => "2001",
            ErrorCode::NotImplemented => "2002",
            ErrorCode::ServiceUnavailable => "2003",
            ErrorCode::ServerBusy => "2005",
            ErrorCode::GenericClientError => "3000",
            ErrorCode::MethodNotAllowed => "3000",
            ErrorCode::UnacceptableVersion => "3001",
            ErrorCode::UnknownUri => "3002",
            ErrorCode::AddPartyInformationError => "3003",
            ErrorCode::DeletePartyInformationError => "3040",
            ErrorCode::GenericValidationError => "3100",
            ErrorCode::MalformedSyntax => "3101",
            ErrorCode::MissingMandatoryElement => "3102",
            ErrorCode::TooManyElements => "3103",
            ErrorCode::TooLargePayload => "3104",
            ErrorCode::ModifiedRequest => "3106",
            ErrorCode::GenericIdNotFound => "3200",
            ErrorCode::DestinationFspError => "3201",
            ErrorCode::PayerFspIdNotFound => "3202",
            ErrorCode::PayeeFspIdNotFound => "3203",
            ErrorCode::PartyNotFound => "3204",
            ErrorCode::TransferIdNotFound => "3208",
            ErrorCode::BulkTransferIdNotFound => "3210",
            ErrorCode::TransferExpired => "3303",
            ErrorCode::PayerInsufficientLiquidity => "4001",
            ErrorCode::PayerLimitError => "4200",
            ErrorCode::GenericSettlementError => "6000",
        }
    }

    /// The spec's name for the code, the start of every `errorDescription`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::CommunicationError => "Communication error",
            ErrorCode::InternalServerError => "Internal server error",
            ErrorCode::NotImplemented => "Not implemented",
            ErrorCode::ServiceUnavailable => "Service currently unavailable",
            ErrorCode::ServerBusy => "Server busy",
            ErrorCode::GenericClientError => "Generic client error",
            ErrorCode::MethodNotAllowed => "Generic client error",
            ErrorCode::UnacceptableVersion => "Unacceptable version requested",
            ErrorCode::UnknownUri => "Unknown URI",
            ErrorCode::AddPartyInformationError => "Add Party information error",
            ErrorCode::DeletePartyInformationError => "Delete Party information error",
            ErrorCode::GenericValidationError => "Generic validation error",
            ErrorCode::MalformedSyntax => "Malformed syntax",
            ErrorCode::MissingMandatoryElement => "Missing mandatory element",
            ErrorCode::TooManyElements => "Too many elements",
            ErrorCode::TooLargePayload => "Too large payload",
            ErrorCode::ModifiedRequest => "Modified request",
            ErrorCode::GenericIdNotFound => "Generic ID not found",
            ErrorCode::DestinationFspError => "Destination FSP Error",
            ErrorCode::PayerFspIdNotFound => "Payer FSP ID not found",
            ErrorCode::PayeeFspIdNotFound => "Payee FSP ID not found",
            ErrorCode::PartyNotFound => "Party not found",
            ErrorCode::TransferIdNotFound => "Transfer ID not found",
            ErrorCode::BulkTransferIdNotFound => "Bulk transfer ID not found",
            ErrorCode::TransferExpired => "Transfer expired",
            ErrorCode::PayerInsufficientLiquidity => "Payer FSP insufficient liquidity",
            ErrorCode::PayerLimitError => "Payer limit error",
            ErrorCode::GenericSettlementError => "Generic Settlement Error",
        }
    }
}

/// A refusal with its FSPIOP code and a description of the cause.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FspiopError {
    pub code: ErrorCode,
    pub detail: String,
    /// `errorInformation.extensionList` entries (key, value), e.g. the
    /// supported versions on a 3001.
    pub extensions: Vec<(String, String)>,
}

impl FspiopError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        FspiopError {
            code,
            detail: detail.into(),
            extensions: Vec::new(),
        }
    }

    pub fn with_extension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((key.into(), value.into()));
        self
    }

    /// `errorDescription` as the reference hub writes it: "<name> - <detail>".
    pub fn description(&self) -> String {
        if self.detail.is_empty() {
            self.code.name().to_string()
        } else {
            format!("{} - {}", self.code.name(), self.detail)
        }
    }

    pub fn internal(detail: impl fmt::Display) -> Self {
        FspiopError::new(ErrorCode::InternalServerError, detail.to_string())
    }
}

impl fmt::Display for FspiopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.code(), self.description())
    }
}

impl std::error::Error for FspiopError {}

impl From<switch_storage::StorageError> for FspiopError {
    /// An overloaded database is 2003 (retry later), as the reference hub
    /// answers when it cannot take work; anything else is 2001.
    fn from(error: switch_storage::StorageError) -> Self {
        if error.is_busy() {
            FspiopError::new(
                ErrorCode::ServiceUnavailable,
                "the database is busy; retry later",
            )
        } else {
            FspiopError::internal(error)
        }
    }
}
