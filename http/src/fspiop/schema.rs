//! Body validation against the FSPIOP OpenAPI schemas of the version named
//! in `Content-Type`: major 1 uses the v1.1 spec, major 2 the v2.0 spec.
//!
//! Every named schema of `components/schemas` (which includes every
//! operation's request body) is compiled once at start-up against a shared
//! registry holding the spec's components, so `#/components/schemas/...`
//! references resolve. The loaded schemas are adjusted for what real clients
//! send: the v1.1 `CorrelationId` takes the v2.0 pattern (lowercase UUID v1–v7
//! or uppercase ULID) and `additionalProperties: false` is dropped everywhere,
//! so unknown extra fields are tolerated.
//!
//! Errors name the failing field by its JSON pointer: a missing property is
//! 3102, too many array items 3103, anything else 3100.

use std::collections::{BTreeSet, HashMap};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, PatternCache, Registry, ValidationError, Validator};
use serde_json::{json, Value};
use switch_actors::ErrorCode;

use super::headers::Version;
use crate::errors::ApiError;

const SPEC_V1: &str = include_str!("../../specs/fspiop-v1.1-openapi3.yaml");
const SPEC_V2: &str = include_str!("../../specs/fspiop-v2.0-openapi3.yaml");

/// Where each spec's components are registered for `$ref` resolution.
const BASE_V1: &str = "urn:fspiop:v1.1";
const BASE_V2: &str = "urn:fspiop:v2.0";

const SCHEMAS_POINTER: &str = "/components/schemas/";

/// Enum lists up to this long are spelled out in error descriptions.
const ENUM_LIST_MAX: usize = 8;

/// The compiled validators of both spec versions.
pub struct Schemas {
    v1: SpecSchemas,
    v2: SpecSchemas,
}

/// One spec version's validators, by `components/schemas` name.
struct SpecSchemas {
    validators: HashMap<String, Validator>,
    /// The names used as an operation's request body.
    request_bodies: BTreeSet<String>,
}

impl Schemas {
    /// Parses both specs and compiles every named schema; fails on the first
    /// that does not compile.
    pub fn load() -> Result<Schemas, String> {
        let v2_spec = parse(SPEC_V2, "v2.0")?;
        let correlation_id = v2_spec
            .pointer("/components/schemas/CorrelationId")
            .cloned()
            .ok_or("the v2.0 spec has no CorrelationId schema")?;
        let mut v1_spec = parse(SPEC_V1, "v1.1")?;
        let v1_correlation_id = v1_spec
            .pointer_mut("/components/schemas/CorrelationId")
            .ok_or("the v1.1 spec has no CorrelationId schema")?;
        // UUIDs or ULIDs on every version, as real clients send.
        v1_correlation_id["pattern"] = correlation_id["pattern"].clone();
        // Both specs share most patterns; compile each regex once.
        let patterns = PatternCache::new();
        Ok(Schemas {
            v1: SpecSchemas::compile(v1_spec, BASE_V1, "v1.1", &patterns)?,
            v2: SpecSchemas::compile(v2_spec, BASE_V2, "v2.0", &patterns)?,
        })
    }

    /// Validates `body` against the named schema (e.g. "TransfersPostRequest")
    /// of the spec for `version`'s major.
    pub fn validate(&self, version: Version, schema: &str, body: &Value) -> Result<(), ApiError> {
        let spec = self.spec(version)?;
        let validator = spec.validators.get(schema).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InternalServerError,
                format!("no schema {schema} in FSPIOP v{version}"),
            )
        })?;
        validator
            .validate(body)
            .map_err(|error| to_api_error(&error))
    }

    /// How many schemas are compiled for `version`'s spec.
    pub fn count(&self, version: Version) -> usize {
        self.spec(version).map_or(0, |spec| spec.validators.len())
    }

    /// The names of the request-body schemas of `version`'s spec.
    pub fn request_bodies(&self, version: Version) -> impl Iterator<Item = &str> {
        self.spec(version)
            .ok()
            .into_iter()
            .flat_map(|spec| spec.request_bodies.iter().map(String::as_str))
    }

    fn spec(&self, version: Version) -> Result<&SpecSchemas, ApiError> {
        match version.major {
            1 => Ok(&self.v1),
            2 => Ok(&self.v2),
            _ => Err(ApiError::new(
                ErrorCode::UnacceptableVersion,
                format!("no FSPIOP schemas for version {version}"),
            )),
        }
    }
}

impl SpecSchemas {
    fn compile(
        mut spec: Value,
        base: &str,
        label: &str,
        patterns: &PatternCache,
    ) -> Result<SpecSchemas, String> {
        let request_bodies = request_body_schemas(&spec);
        let mut components = spec
            .get_mut("components")
            .map(Value::take)
            .ok_or_else(|| format!("the {label} spec has no components"))?;
        drop_closed_objects(&mut components);
        let names: Vec<String> = components
            .get("schemas")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("the {label} spec has no components/schemas"))?
            .keys()
            .cloned()
            .collect();
        if let Some(name) = request_bodies.iter().find(|n| !names.contains(n)) {
            return Err(format!(
                "{label}: request body schema {name} is not defined"
            ));
        }
        let document = json!({ "components": components });
        let registry = Registry::new()
            .draft(Draft::Draft4)
            .add(base, Draft::Draft4.create_resource(document))
            .and_then(|builder| builder.prepare())
            .map_err(|e| format!("{label}: cannot register the schemas: {e}"))?;
        let options = jsonschema::options()
            .with_draft(Draft::Draft4)
            .with_registry(&registry)
            .with_pattern_cache(patterns.clone());
        let mut validators = HashMap::with_capacity(names.len());
        for name in names {
            let root = json!({ "$ref": format!("{base}#{SCHEMAS_POINTER}{name}") });
            let validator = options
                .build(&root)
                .map_err(|e| format!("{label}: schema {name} does not compile: {e}"))?;
            validators.insert(name, validator);
        }
        Ok(SpecSchemas {
            validators,
            request_bodies,
        })
    }
}

fn parse(text: &str, label: &str) -> Result<Value, String> {
    yaml_serde::from_str(text).map_err(|e| format!("the FSPIOP {label} spec does not parse: {e}"))
}

/// The names of `paths.*.*.requestBody.content.*.schema.$ref`.
fn request_body_schemas(spec: &Value) -> BTreeSet<String> {
    let operations = spec
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|paths| paths.values())
        .filter_map(Value::as_object)
        .flat_map(|path| path.values());
    operations
        .filter_map(|operation| operation.pointer("/requestBody/content"))
        .filter_map(Value::as_object)
        .flat_map(|content| content.values())
        .filter_map(|media| media.pointer("/schema/$ref"))
        .filter_map(Value::as_str)
        .filter_map(|r| r.strip_prefix("#/components/schemas/"))
        .map(str::to_string)
        .collect()
}

/// Removes every `additionalProperties: false`, so unknown fields pass.
fn drop_closed_objects(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                map.remove("additionalProperties");
            }
            map.values_mut().for_each(drop_closed_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_closed_objects),
        _ => {}
    }
}

/// The field a location names, for messages.
fn field(pointer: &str) -> &str {
    if pointer.is_empty() {
        "request body"
    } else {
        pointer
    }
}

/// The `components/schemas` name the failing keyword belongs to, from the
/// keyword's canonical location (`/components/schemas/Amount/pattern`).
fn schema_name(error: &ValidationError<'_>) -> Option<String> {
    let path = error.schema_path().as_str();
    let rest = &path[path.find(SCHEMAS_POINTER)? + SCHEMAS_POINTER.len()..];
    rest.split('/').next().map(str::to_string)
}

fn to_api_error(error: &ValidationError<'_>) -> ApiError {
    let at = error.instance_path().as_str();
    let kind = error.kind();
    match kind {
        ValidationErrorKind::Required { property } => {
            let property = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            ApiError::new(
                ErrorCode::MissingMandatoryElement,
                format!("{at}/{property} is required"),
            )
        }
        ValidationErrorKind::MaxItems { limit } => ApiError::new(
            ErrorCode::TooManyElements,
            format!("{} must not have more than {limit} items", field(at)),
        ),
        _ => ApiError::new(
            ErrorCode::GenericValidationError,
            format!("{} {}", field(at), reason(error, kind)),
        ),
    }
}

fn reason(error: &ValidationError<'_>, kind: &ValidationErrorKind) -> String {
    let of_type = || {
        schema_name(error)
            .map(|name| format!(" of {name}"))
            .unwrap_or_default()
    };
    match kind {
        ValidationErrorKind::Type { kind } => match kind {
            TypeKind::Single(t) => format!("must be of type {t}"),
            TypeKind::Multiple(ts) => {
                let types: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
                format!("must be of type {}", types.join(" or "))
            }
        },
        ValidationErrorKind::Pattern { .. } => format!("does not match the pattern{}", of_type()),
        ValidationErrorKind::Enum { options } => match options.as_array() {
            Some(values) if values.len() <= ENUM_LIST_MAX => {
                let values: Vec<String> = values
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
                format!("must be one of {}", values.join(", "))
            }
            _ => format!("must be one of the allowed values{}", of_type()),
        },
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => format!("must have at least {limit} items"),
        ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. } => {
            format!("does not match exactly the allowed forms{}", of_type())
        }
        other => format!("is invalid ({})", other.keyword()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;
    use std::time::Instant;

    use actix_web::ResponseError;

    use super::*;

    fn schemas() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| Schemas::load().expect("the FSPIOP schemas compile"))
    }

    const ULID: &str = "01HZX3Y8K6Q2W9V4T7R5M1N0PB";

    fn prepare() -> Value {
        json!({
            "transferId": "b51ec534-ee48-4575-b6a9-ead2955b8069",
            "payerFsp": "payerfsp",
            "payeeFsp": "payeefsp",
            "amount": {"amount": "100", "currency": "USD"},
            "ilpPacket": "AYIBgQAAAAAAAASwNGxldmVsb25lLmRmc3AxLm1lci45T2RTOF81MDdqUUZERmZlakgyOVc4bXFmNEpLMHlGTFGCAUBQU0svMS4wCk5vbmNlOiB1SXlweUYzY3pYSXBFdzVVc05TYWh3CkVuY3J5cHRpb246IG5vbmUKUGF5bWVudC1JZDogMTMyMzZhM2ItOGZhOC00MTYzLTg0NDctNGMzZWQzZGE5OGE3CgpDb250ZW50LUxlbmd0aDogMTM1CkNvbnRlbnQtVHlwZTogYXBwbGljYXRpb24vanNvbgpTZW5kZXItSWRlbnRpZmllcjogOTI4MDYzOTEKCiJ7XCJmZWVcIjowLFwidHJhbnNmZXJDb2RlXCI6XCJpbnZvaWNlXCIsXCJkZWJpdE5hbWVcIjpcImFsaWNlIGNvb3BlclwiLFwiY3JlZGl0TmFtZVwiOlwibWVyIGNoYW50XCIsXCJkZWJpdElkZW50aWZpZXJcIjpcIjkyODA2MzkxXCJ9IgA",
            "condition": "GRzLaTP7DJ9t4P-a_BA0WA9wzzlsugf00-Tn6kESAfM",
            "expiration": "2016-05-24T08:38:08.699-04:00"
        })
    }

    fn refused(version: Version, schema: &str, body: &Value) -> ApiError {
        schemas()
            .validate(version, schema, body)
            .expect_err("should be refused")
    }

    #[test]
    fn load_compiles_every_request_body() {
        let s = schemas();
        for version in [Version::V1_1, Version::V2_0] {
            assert!(s.count(version) >= 20, "v{version}: {}", s.count(version));
            let bodies: Vec<&str> = s.request_bodies(version).collect();
            assert!(bodies.len() >= 19, "v{version}: {bodies:?}");
            assert!(bodies.contains(&"TransfersPostRequest"));
            assert!(bodies.contains(&"QuotesPostRequest"));
        }
        assert_eq!(s.count(Version::V1_1), 89);
        assert_eq!(s.count(Version::V2_0), 102);
        assert!(s
            .request_bodies(Version::V2_0)
            .any(|n| n == "FxTransfersPostRequest"));
        assert_eq!(s.count(Version { major: 3, minor: 0 }), 0);
    }

    #[test]
    fn valid_prepare_passes() {
        for version in [Version::V1_0, Version::V1_1, Version::V2_0] {
            schemas()
                .validate(version, "TransfersPostRequest", &prepare())
                .unwrap();
        }
    }

    #[test]
    fn ulid_transfer_id_passes_on_every_version() {
        let mut body = prepare();
        body["transferId"] = json!(ULID);
        for version in [Version::V1_1, Version::V2_0] {
            schemas()
                .validate(version, "TransfersPostRequest", &body)
                .unwrap();
        }
        // Not anything goes: a malformed id is still refused.
        body["transferId"] = json!("not-an-id");
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(err.0.code, ErrorCode::GenericValidationError);
        assert!(err.0.detail.starts_with("/transferId "), "{}", err.0.detail);
    }

    #[test]
    fn unknown_fields_pass() {
        let mut body = prepare();
        body["somethingElse"] = json!({"any": ["thing"]});
        body["amount"]["extra"] = json!(1);
        for version in [Version::V1_1, Version::V2_0] {
            schemas()
                .validate(version, "TransfersPostRequest", &body)
                .unwrap();
        }
    }

    #[test]
    fn missing_amount_gives_3102() {
        let mut body = prepare();
        body.as_object_mut().unwrap().remove("amount");
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(err.0.code, ErrorCode::MissingMandatoryElement);
        assert_eq!(
            err.0.description(),
            "Missing mandatory element - /amount is required"
        );
        assert_eq!(err.status_code(), actix_web::http::StatusCode::BAD_REQUEST);

        let mut body = prepare();
        body["amount"].as_object_mut().unwrap().remove("currency");
        let err = refused(Version::V2_0, "TransfersPostRequest", &body);
        assert_eq!(
            err.0.description(),
            "Missing mandatory element - /amount/currency is required"
        );
    }

    #[test]
    fn bad_amount_gives_3100_naming_the_path() {
        let mut body = prepare();
        body["amount"]["amount"] = json!("1.23456");
        for version in [Version::V1_1, Version::V2_0] {
            let err = refused(version, "TransfersPostRequest", &body);
            assert_eq!(err.0.code, ErrorCode::GenericValidationError);
            assert_eq!(
                err.0.description(),
                "Generic validation error - /amount/amount does not match the pattern of Amount"
            );
        }
    }

    #[test]
    fn wrong_type_gives_3100() {
        let mut body = prepare();
        body["amount"] = json!("100");
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(err.0.code, ErrorCode::GenericValidationError);
        assert_eq!(err.0.detail, "/amount must be of type object");

        let err = refused(Version::V1_1, "TransfersPostRequest", &json!([1, 2]));
        assert_eq!(err.0.detail, "request body must be of type object");

        let mut body = prepare();
        body["payerFsp"] = json!(42);
        let err = refused(Version::V2_0, "TransfersPostRequest", &body);
        assert_eq!(err.0.detail, "/payerFsp must be of type string");
    }

    #[test]
    fn other_failures_give_3100() {
        let put =
            json!({"transferState": "DONE", "completedTimestamp": "2016-05-24T08:38:08.699-04:00"});
        let err = refused(Version::V1_1, "TransfersIDPutResponse", &put);
        assert_eq!(err.0.code, ErrorCode::GenericValidationError);
        assert_eq!(
            err.0.detail,
            "/transferState must be one of RECEIVED, RESERVED, COMMITTED, ABORTED"
        );

        let mut body = prepare();
        body["amount"]["currency"] = json!("XXXX");
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(err.0.code, ErrorCode::GenericValidationError);
        assert!(
            err.0.detail.starts_with("/amount/currency "),
            "{}",
            err.0.detail
        );

        let mut body = prepare();
        body["expiration"] = json!("2016-05-24T08:38:08-04:00");
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(
            err.0.detail,
            "/expiration does not match the pattern of DateTime"
        );
    }

    #[test]
    fn too_many_items_give_3103() {
        let extension: Vec<Value> = (0..17)
            .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
            .collect();
        let mut body = prepare();
        body["extensionList"] = json!({ "extension": extension });
        let err = refused(Version::V1_1, "TransfersPostRequest", &body);
        assert_eq!(err.0.code, ErrorCode::TooManyElements);
        assert_eq!(
            err.0.detail,
            "/extensionList/extension must not have more than 16 items"
        );
    }

    #[test]
    fn callbacks_pass() {
        let put = json!({
            "fulfilment": "UNlJ98hZTY_dsw0cAqw4i_UN3v4utt7CZFB4yfLbVFA",
            "completedTimestamp": "2016-05-24T08:38:08.699-04:00",
            "transferState": "COMMITTED"
        });
        let patch = json!({"completedTimestamp": "2016-05-24T08:38:08.699-04:00", "transferState": "COMMITTED"});
        let error = json!({"errorInformation": {"errorCode": "5100", "errorDescription": "Payee rejected"}});
        for version in [Version::V1_1, Version::V2_0] {
            schemas()
                .validate(version, "TransfersIDPutResponse", &put)
                .unwrap();
            schemas()
                .validate(version, "TransfersIDPatchResponse", &patch)
                .unwrap();
            schemas()
                .validate(version, "ErrorInformationObject", &error)
                .unwrap();
        }
        let err = refused(
            Version::V1_1,
            "ErrorInformationObject",
            &json!({"errorInformation": {}}),
        );
        assert_eq!(err.0.code, ErrorCode::MissingMandatoryElement);
        assert!(
            err.0.detail.starts_with("/errorInformation/error"),
            "{}",
            err.0.detail
        );
    }

    #[test]
    fn unknown_schema_or_version_is_refused() {
        assert_eq!(
            refused(Version::V1_1, "NoSuchSchema", &prepare()).0.code,
            ErrorCode::InternalServerError
        );
        assert_eq!(
            refused(
                Version { major: 3, minor: 0 },
                "TransfersPostRequest",
                &prepare()
            )
            .0
            .code,
            ErrorCode::UnacceptableVersion
        );
        // FX exists only in v2.0.
        assert!(schemas().count(Version::V2_0) > schemas().count(Version::V1_1));
        assert_eq!(
            refused(Version::V1_1, "FxTransfersPostRequest", &json!({}))
                .0
                .code,
            ErrorCode::InternalServerError
        );
    }

    /// A rough measure, printed with `--nocapture`; asserts only a loose bound.
    #[test]
    fn validate_is_fast() {
        let start = Instant::now();
        let s = schemas();
        println!("Schemas::load (or wait for it): {:?}", start.elapsed());
        let body = prepare();
        let rounds = 2_000;
        let start = Instant::now();
        for _ in 0..rounds {
            s.validate(Version::V1_1, "TransfersPostRequest", &body)
                .unwrap();
        }
        let each = start.elapsed() / rounds;
        println!("validate(TransfersPostRequest): {each:?} per call");
        assert!(each.as_millis() < 5, "{each:?}");
    }
}
