//! Reading request bodies field by field, so every refusal names the field:
//! invalid JSON is 3101, a missing field 3102, a wrong type or format 3100.
//! Unknown extra fields are tolerated, as the reference hub does.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value};
use switch_actors::ErrorCode;

use crate::errors::{ApiError, ApiResult};

/// The value a JSON pointer (RFC 6901) names, like `Value::pointer`, but
/// without its copy of every token: the hot paths read half a dozen fixed
/// pointers from every prepare and fulfil. Only a pointer with an escape
/// (`~0`, `~1`) takes `Value::pointer`'s way.
pub fn at<'a>(value: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.contains('~') {
        return value.pointer(pointer);
    }
    if pointer.is_empty() {
        return Some(value);
    }
    let tokens = pointer.strip_prefix('/')?;
    tokens
        .split('/')
        .try_fold(value, |target, token| match target {
            Value::Object(fields) => fields.get(token),
            Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
            _ => None,
        })
}

/// An array index token: digits without a leading zero (RFC 6901).
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || !token.starts_with('0');
    if canonical && !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

/// A parsed JSON object body.
pub struct Body {
    fields: Map<String, Value>,
    /// Where the fields sit, for messages: "" at the top, "limit." inside.
    path: String,
}

impl Body {
    pub fn parse(bytes: &[u8]) -> ApiResult<Body> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedSyntax,
                format!("request body is not valid JSON: {e}"),
            )
        })?;
        match value {
            Value::Object(fields) => Ok(Body {
                fields,
                path: String::new(),
            }),
            _ => Err(ApiError::new(
                ErrorCode::MalformedSyntax,
                "request body must be a JSON object",
            )),
        }
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.path)
    }

    fn missing(&self, field: &str) -> ApiError {
        ApiError::new(
            ErrorCode::MissingMandatoryElement,
            format!("\"{}\" is required", self.name(field)),
        )
    }

    fn invalid(&self, field: &str, reason: &str) -> ApiError {
        ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{}\" {reason}", self.name(field)),
        )
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    pub fn str(&self, field: &str) -> ApiResult<String> {
        self.opt_str(field)?.ok_or_else(|| self.missing(field))
    }

    pub fn opt_str(&self, field: &str) -> ApiResult<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(field, "must be a string")),
        }
    }

    pub fn bool(&self, field: &str) -> ApiResult<bool> {
        self.opt_bool(field)?.ok_or_else(|| self.missing(field))
    }

    pub fn opt_bool(&self, field: &str) -> ApiResult<Option<bool>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Operator scripts sometimes send the strings "true"/"false".
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => Err(self.invalid(field, "must be a boolean")),
        }
    }

    /// A number (or numeric string), read exactly.
    pub fn decimal(&self, field: &str) -> ApiResult<Decimal> {
        self.opt_decimal(field)?.ok_or_else(|| self.missing(field))
    }

    pub fn opt_decimal(&self, field: &str) -> ApiResult<Option<Decimal>> {
        let text = match self.get(field) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(self.invalid(field, "must be a number")),
        };
        let parsed = Decimal::from_str(&text)
            .or_else(|_| Decimal::from_scientific(&text))
            .map_err(|_| self.invalid(field, "must be a number"))?;
        Ok(Some(parsed))
    }

    pub fn object(&self, field: &str) -> ApiResult<Body> {
        match self.get(field) {
            None => Err(self.missing(field)),
            Some(Value::Object(fields)) => Ok(Body {
                fields: fields.clone(),
                path: format!("{}{field}.", self.path),
            }),
            Some(_) => Err(self.invalid(field, "must be an object")),
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.get(field).is_some()
    }
}

/// An FSPIOP `Amount`: positive or zero, at most 18 integer digits and 4
/// decimals (the spec's regex, except that trailing zeros are tolerated).
pub fn check_amount(field: &str, amount: Decimal) -> ApiResult<Decimal> {
    let normal = amount.normalize();
    if normal.is_sign_negative() && !normal.is_zero() {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{field}\" must not be negative"),
        ));
    }
    if normal.scale() > 4 {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{field}\" has more than 4 decimal places"),
        ));
    }
    if switch_storage::to_units(normal).is_err() {
        return Err(ApiError::new(
            ErrorCode::GenericValidationError,
            format!("\"{field}\" has more than 18 digits"),
        ));
    }
    Ok(normal)
}

/// A decimal as a JSON number, exactly.
pub fn number(value: Decimal) -> Value {
    let text = value.normalize().to_string();
    serde_json::Number::from_str(&text)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

/// base64(SHA-256(body)) without padding, as the reference hub hashes payloads.
pub fn request_hash(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

/// A correlation id: a UUID (any version) or a ULID, as real clients send both
/// on every API version.
pub fn valid_correlation_id(id: &str) -> bool {
    let uuid = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    let ulid = id.len() == 26
        && id.chars().all(|c| {
            c.is_ascii_digit() || "ABCDEFGHJKMNPQRSTVWXYZ".contains(c.to_ascii_uppercase())
        });
    uuid || ulid
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `at` must name the same value as `Value::pointer` for every pointer.
    #[test]
    fn at_agrees_with_value_pointer() {
        let body = json!({
            "transferId": "t1",
            "amount": {"amount": "10", "currency": "USD"},
            "lines": [{"id": "a"}, {"id": "b"}],
            "": {"empty": true},
            "a/b": 1,
            "m~n": 2,
            "01": "zero-one"
        });
        let pointers = [
            "",
            "/transferId",
            "/amount/currency",
            "/amount/missing",
            "/lines/1/id",
            "/lines/01",
            "/lines/2",
            "/lines/-",
            "/lines/x",
            "/transferId/deeper",
            "/",
            "//empty",
            "/a~1b",
            "/m~0n",
            "/01",
            "transferId",
        ];
        for pointer in pointers {
            assert_eq!(at(&body, pointer), body.pointer(pointer), "{pointer:?}");
        }
        assert_eq!(at(&body, "/amount/currency"), Some(&json!("USD")));
    }
}
