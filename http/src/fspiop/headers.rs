//! FSPIOP request headers, validated as the reference hub does it
//! (central-services-shared `headerValidation` plus the spec's header
//! parameters): `Accept`, `Content-Type`, `Date`, `FSPIOP-Source` and
//! `FSPIOP-Destination`, in that order. A missing header is 3102, a malformed
//! one 3101 and an unsupported version 3001 (HTTP 406) with the supported
//! versions in the error's extension list. `Authorization` is ignored.

use std::fmt;

use actix_web::http::header::HeaderMap;
use chrono::NaiveDateTime;
use switch_actors::{ErrorCode, FspiopError};

use crate::errors::ApiError;

/// The FSPIOP resources subject to header validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Parties,
    Participants,
    Quotes,
    BulkQuotes,
    Transfers,
    BulkTransfers,
    TransactionRequests,
    Authorizations,
    Transactions,
    FxQuotes,
    FxTransfers,
}

impl Resource {
    /// The name in `application/vnd.interoperability.{name}+json`.
    pub fn media_name(self) -> &'static str {
        match self {
            Resource::Parties => "parties",
            Resource::Participants => "participants",
            Resource::Quotes => "quotes",
            Resource::BulkQuotes => "bulkQuotes",
            Resource::Transfers => "transfers",
            Resource::BulkTransfers => "bulkTransfers",
            Resource::TransactionRequests => "transactionRequests",
            Resource::Authorizations => "authorizations",
            Resource::Transactions => "transactions",
            Resource::FxQuotes => "fxQuotes",
            Resource::FxTransfers => "fxTransfers",
        }
    }
}

/// An FSPIOP API version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

impl Version {
    pub const V1_0: Version = Version { major: 1, minor: 0 };
    pub const V1_1: Version = Version { major: 1, minor: 1 };
    pub const V2_0: Version = Version { major: 2, minor: 0 };
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The content versions the switch accepts, as the reference hub's defaults.
pub const SUPPORTED_VERSIONS: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V2_0];

/// What a valid request's headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FspiopHeaders {
    /// The version of the body, from `Content-Type`.
    pub content_version: Version,
    /// The highest supported version the `Accept` header names; `None` when
    /// there is no `Accept` or one of its entries accepts any version.
    pub accept_version: Option<Version>,
    pub source: String,
    /// `None` when absent or empty (GET /parties leaves it empty).
    pub destination: Option<String>,
    /// The `Date` header as received.
    pub date: String,
}

const MEDIA_PREFIX: &str = "application/vnd.interoperability.";
const MEDIA_SUFFIX: &str = "+json";
const FSP_ID_MAX: usize = 32;

/// Validates the FSPIOP headers of a request on `resource`. `is_request` is
/// true for POST/GET/DELETE (`Accept` required) and false for PUT/PATCH
/// callbacks (`Accept` optional, validated when present). `Content-Type` is
/// required on every method, GET and DELETE included, as the spec's
/// parameters say.
pub fn validate(
    resource: Resource,
    is_request: bool,
    headers: &HeaderMap,
) -> Result<FspiopHeaders, ApiError> {
    let accept_version = match text(headers, "accept", "Accept")? {
        None if is_request => return Err(missing("Accept")),
        None => None,
        Some(accept) => check_accept(resource, accept)?,
    };

    let content_type =
        text(headers, "content-type", "Content-Type")?.ok_or_else(|| missing("Content-type"))?;
    let content_version = parse_content_type(resource, content_type)
        .ok_or_else(|| malformed("Invalid content-type header"))?;
    if !SUPPORTED_VERSIONS.contains(&content_version) {
        return Err(unacceptable(
            "Client supplied a protocol version which is not supported by the server",
        ));
    }

    let date = text(headers, "date", "Date")?.ok_or_else(|| missing("Date"))?;
    if !valid_date(date) {
        return Err(malformed(
            "Invalid date header, expected RFC 1123 (e.g. Sat, 28 Nov 2026 11:11:02 GMT)",
        ));
    }

    let source = text(headers, "fspiop-source", "FSPIOP-Source")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| missing("FSPIOP-Source"))?;
    if source.chars().count() > FSP_ID_MAX {
        return Err(malformed(
            "Invalid FSPIOP-Source header, longer than 32 characters",
        ));
    }

    let destination = text(headers, "fspiop-destination", "FSPIOP-Destination")?
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if destination.is_some_and(|d| d.chars().count() > FSP_ID_MAX) {
        return Err(malformed(
            "Invalid FSPIOP-Destination header, longer than 32 characters",
        ));
    }

    Ok(FspiopHeaders {
        content_version,
        accept_version,
        source: source.to_string(),
        destination: destination.map(str::to_string),
        date: date.to_string(),
    })
}

/// The `Content-Type` the hub writes on its own messages.
pub fn content_type(resource: Resource, version: Version) -> String {
    format!(
        "{MEDIA_PREFIX}{}{MEDIA_SUFFIX};version={version}",
        resource.media_name()
    )
}

/// The `Date` header value for hub-generated messages (RFC 1123).
pub fn rfc1123_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn missing(header: &str) -> ApiError {
    ApiError::new(
        ErrorCode::MissingMandatoryElement,
        format!("{header} is required"),
    )
}

fn malformed(detail: &str) -> ApiError {
    ApiError::new(ErrorCode::MalformedSyntax, detail)
}

/// 3001 with the supported versions as key=major, value=minor extensions.
fn unacceptable(detail: &str) -> ApiError {
    let error = SUPPORTED_VERSIONS.iter().fold(
        FspiopError::new(ErrorCode::UnacceptableVersion, detail),
        |e, v| e.with_extension(v.major.to_string(), v.minor.to_string()),
    );
    ApiError(error)
}

/// The header's value, `None` when absent; 3101 when it is not visible ASCII.
fn text<'a>(
    headers: &'a HeaderMap,
    name: &str,
    display: &str,
) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value.to_str().map(Some).map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedSyntax,
                format!("Invalid {display} header"),
            )
        }),
    }
}

/// Strips `application/vnd.interoperability.{resource}+json` (ASCII case
/// insensitive) from the start of `entry`, returning the rest.
fn strip_media(resource: Resource, entry: &str) -> Option<&str> {
    let name = resource.media_name();
    let len = MEDIA_PREFIX.len() + name.len() + MEDIA_SUFFIX.len();
    let head = entry.get(..len)?;
    let (prefix, rest) = head.split_at(MEDIA_PREFIX.len());
    let (middle, suffix) = rest.split_at(name.len());
    (prefix.eq_ignore_ascii_case(MEDIA_PREFIX)
        && middle.eq_ignore_ascii_case(name)
        && suffix.eq_ignore_ascii_case(MEDIA_SUFFIX))
    .then(|| &entry[len..])
}

/// The `version` parameter among `;`-separated parameters: `Ok(None)` when
/// there is none, `Err` when the parameters are malformed.
fn version_param(params: &str) -> Result<Option<&str>, ()> {
    let params = params.trim_start();
    if params.is_empty() {
        return Ok(None);
    }
    let params = params.strip_prefix(';').ok_or(())?;
    let mut version = None;
    for param in params.split(';') {
        let (name, value) = param.split_once('=').ok_or(())?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || value.is_empty() {
            return Err(());
        }
        if name.eq_ignore_ascii_case("version") {
            if version.is_some() {
                return Err(());
            }
            version = Some(value);
        }
    }
    Ok(version)
}

fn number(digits: &str) -> Option<u8> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `major.minor`, both mandatory.
fn parse_version(text: &str) -> Option<Version> {
    let (major, minor) = text.split_once('.')?;
    Some(Version {
        major: number(major)?,
        minor: number(minor)?,
    })
}

/// The version of a valid `Content-Type`, `None` if malformed.
fn parse_content_type(resource: Resource, header: &str) -> Option<Version> {
    let rest = strip_media(resource, header.trim())?;
    parse_version(version_param(rest).ok()??)
}

/// An `Accept` entry's version: `N` (any minor) or `N.M`.
enum Accepted {
    Any,
    Major(u8),
    Exact(Version),
}

impl Accepted {
    /// The highest supported version this entry accepts, if any.
    fn best(&self) -> Option<Version> {
        match self {
            Accepted::Any => SUPPORTED_VERSIONS.iter().max().copied(),
            Accepted::Major(major) => SUPPORTED_VERSIONS
                .iter()
                .filter(|v| v.major == *major)
                .max()
                .copied(),
            Accepted::Exact(version) => SUPPORTED_VERSIONS.contains(version).then_some(*version),
        }
    }
}

fn parse_accept_entry(resource: Resource, entry: &str) -> Option<Accepted> {
    let rest = strip_media(resource, entry.trim())?;
    match version_param(rest).ok()? {
        None => Some(Accepted::Any),
        Some(text) if text.contains('.') => parse_version(text).map(Accepted::Exact),
        Some(text) => number(text).map(Accepted::Major),
    }
}

/// Validates `Accept`: every entry must be the resource's media type; at
/// least one must accept a supported version. Returns the negotiated version.
fn check_accept(resource: Resource, header: &str) -> Result<Option<Version>, ApiError> {
    let mut any = false;
    let mut best: Option<Version> = None;
    let mut acceptable = false;
    for entry in header.split(',') {
        let accepted = parse_accept_entry(resource, entry)
            .ok_or_else(|| malformed("Invalid accept header"))?;
        if matches!(accepted, Accepted::Any) {
            any = true;
        }
        if let Some(version) = accepted.best() {
            acceptable = true;
            best = best.max(Some(version));
        }
    }
    if !acceptable {
        return Err(unacceptable(
            "The Client requested an unsupported version, see extension list for supported version(s).",
        ));
    }
    Ok(if any { None } else { best })
}

/// RFC 1123: `ddd, DD MMM YYYY HH:mm:ss GMT`, with a weekday that matches.
fn valid_date(date: &str) -> bool {
    NaiveDateTime::parse_from_str(date.trim(), "%a, %d %b %Y %H:%M:%S GMT").is_ok()
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};
    use actix_web::http::StatusCode;
    use actix_web::ResponseError;

    use super::*;
    use crate::errors::error_body;

    const CT_11: &str = "application/vnd.interoperability.transfers+json;version=1.1";
    const ACCEPT_1: &str = "application/vnd.interoperability.transfers+json;version=1";
    const DATE: &str = "Tue, 24 May 2016 12:38:08 GMT";

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn request() -> Vec<(&'static str, &'static str)> {
        vec![
            ("accept", ACCEPT_1),
            ("content-type", CT_11),
            ("date", DATE),
            ("fspiop-source", "payerfsp"),
            ("fspiop-destination", "payeefsp"),
            ("authorization", "Bearer {$inputs.TOKEN}"),
        ]
    }

    fn without(name: &str) -> HeaderMap {
        map(&request()
            .into_iter()
            .filter(|(n, _)| *n != name)
            .collect::<Vec<_>>())
    }

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut pairs: Vec<(&str, &str)> =
            request().into_iter().filter(|(n, _)| *n != name).collect();
        pairs.push((name, value));
        map(&pairs)
    }

    fn code(result: Result<FspiopHeaders, ApiError>) -> &'static str {
        result.expect_err("should be refused").0.code.code()
    }

    #[test]
    fn valid_request_passes() {
        let h = validate(Resource::Transfers, true, &map(&request())).unwrap();
        assert_eq!(h.content_version, Version::V1_1);
        assert_eq!(h.accept_version, Some(Version::V1_1));
        assert_eq!(h.source, "payerfsp");
        assert_eq!(h.destination.as_deref(), Some("payeefsp"));
        assert_eq!(h.date, DATE);
    }

    #[test]
    fn valid_callback_without_accept_passes() {
        let headers = map(&[
            (
                "content-type",
                "application/vnd.interoperability.transfers+json;version=2.0",
            ),
            ("date", DATE),
            ("fspiop-source", "payeefsp"),
            ("fspiop-destination", "payerfsp"),
        ]);
        let h = validate(Resource::Transfers, false, &headers).unwrap();
        assert_eq!(h.content_version, Version::V2_0);
        assert_eq!(h.accept_version, None);
    }

    #[test]
    fn tolerant_forms_pass() {
        let h = with(
            "content-type",
            "Application/VND.Interoperability.Transfers+JSON ; version=1.0",
        );
        assert_eq!(
            validate(Resource::Transfers, true, &h)
                .unwrap()
                .content_version,
            Version::V1_0
        );
        // Empty destination (GET /parties) means none.
        let h = with("fspiop-destination", "");
        assert_eq!(
            validate(Resource::Transfers, true, &h).unwrap().destination,
            None
        );
        // Other resources.
        let h = map(&[
            (
                "accept",
                "application/vnd.interoperability.bulkTransfers+json",
            ),
            (
                "content-type",
                "application/vnd.interoperability.bulkTransfers+json;version=1.1",
            ),
            ("date", DATE),
            ("fspiop-source", "payerfsp"),
        ]);
        let parsed = validate(Resource::BulkTransfers, true, &h).unwrap();
        assert_eq!(parsed.accept_version, None);
        assert_eq!(parsed.destination, None);
    }

    #[test]
    fn missing_headers_give_3102() {
        for name in ["accept", "content-type", "date", "fspiop-source"] {
            let err = validate(Resource::Transfers, true, &without(name)).expect_err(name);
            assert_eq!(err.0.code, ErrorCode::MissingMandatoryElement, "{name}");
            assert_eq!(err.status_code(), StatusCode::BAD_REQUEST);
            assert!(
                err.0.detail.to_ascii_lowercase().contains(name),
                "{name}: {}",
                err.0.description()
            );
        }
        // Destination is optional; Accept is optional on callbacks.
        assert!(validate(Resource::Transfers, true, &without("fspiop-destination")).is_ok());
        assert!(validate(Resource::Transfers, false, &without("accept")).is_ok());
        // Content-Type is required on GET too (spec parameters: required).
        assert_eq!(
            code(validate(
                Resource::Transfers,
                false,
                &without("content-type")
            )),
            "3102"
        );
    }

    #[test]
    fn malformed_headers_give_3101() {
        let cases = [
            ("content-type", "application/json"),
            (
                "content-type",
                "application/vnd.interoperability.quotes+json;version=1.1",
            ),
            (
                "content-type",
                "application/vnd.interoperability.transfers+json",
            ),
            (
                "content-type",
                "application/vnd.interoperability.transfers+json;version=1",
            ),
            (
                "content-type",
                "application/vnd.interoperability.transfers+json;version=1.x",
            ),
            (
                "content-type",
                "application/vnd.interoperability.transfers+jsonx;version=1.1",
            ),
            ("accept", "application/json"),
            (
                "accept",
                "application/vnd.interoperability.transfers+json;version=abc",
            ),
            ("date", "2016-05-24T08:38:08.699-04:00"),
            ("date", "Tue, 24 May 2016 12:38:08"),
            ("date", "Wed, 24 May 2016 12:38:08 GMT"),
            ("date", "Tue, 24 May 2016 25:38:08 GMT"),
            ("fspiop-source", "a-name-that-is-far-longer-than-32-chars"),
            (
                "fspiop-destination",
                "a-name-that-is-far-longer-than-32-chars",
            ),
        ];
        for (name, value) in cases {
            let err = validate(Resource::Transfers, true, &with(name, value)).expect_err(value);
            assert_eq!(err.0.code, ErrorCode::MalformedSyntax, "{name}: {value}");
            assert!(
                err.0.detail.to_ascii_lowercase().contains(name),
                "{}",
                err.0.detail
            );
        }
    }

    #[test]
    fn unsupported_version_gives_3001_with_versions() {
        let headers = with(
            "content-type",
            "application/vnd.interoperability.transfers+json;version=3.0",
        );
        let err = validate(Resource::Transfers, false, &headers).unwrap_err();
        assert_eq!(err.0.code, ErrorCode::UnacceptableVersion);
        assert_eq!(err.status_code(), StatusCode::NOT_ACCEPTABLE);
        let body = error_body(&err.0);
        assert_eq!(body["errorInformation"]["errorCode"], "3001");
        assert_eq!(
            body["errorInformation"]["extensionList"]["extension"],
            serde_json::json!([
                {"key": "1", "value": "0"},
                {"key": "1", "value": "1"},
                {"key": "2", "value": "0"}
            ])
        );
        // An Accept asking only for unsupported versions.
        let headers = with(
            "accept",
            "application/vnd.interoperability.transfers+json;version=3",
        );
        let err = validate(Resource::Transfers, true, &headers).unwrap_err();
        assert_eq!(err.status_code(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(err.0.extensions.len(), 3);
        assert_eq!(
            code(validate(
                Resource::Transfers,
                true,
                &with("accept", &ACCEPT_1.replace('1', "1.2"))
            )),
            "3001"
        );
    }

    #[test]
    fn accept_with_several_types_passes_when_one_is_supported() {
        let accept = "application/vnd.interoperability.transfers+json;version=3.0, \
                      application/vnd.interoperability.transfers+json;version=2,\
                      application/vnd.interoperability.transfers+json ; version=1.0";
        let h = validate(Resource::Transfers, true, &with("accept", accept)).unwrap();
        assert_eq!(h.accept_version, Some(Version::V2_0));
        let accept = "application/vnd.interoperability.transfers+json;version=9,application/vnd.interoperability.transfers+json";
        assert_eq!(
            validate(Resource::Transfers, true, &with("accept", accept))
                .unwrap()
                .accept_version,
            None
        );
    }

    #[test]
    fn hub_headers_round_trip() {
        let ct = content_type(Resource::TransactionRequests, Version::V1_1);
        assert_eq!(
            ct,
            "application/vnd.interoperability.transactionRequests+json;version=1.1"
        );
        assert_eq!(
            parse_content_type(Resource::TransactionRequests, &ct),
            Some(Version::V1_1)
        );
        let now = rfc1123_now();
        assert!(valid_date(&now), "{now}");
        assert!(now.ends_with(" GMT") && now.len() == 29, "{now}");
        assert_eq!(Version::V2_0.to_string(), "2.0");
    }
}
