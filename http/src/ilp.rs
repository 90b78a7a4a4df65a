//! Interledger codec shared by the switch and the tests.
//!
//! The switch itself only checks conditions and fulfilments (hub-behaviour
//! §3.1): a condition is 32 bytes, and a fulfilment is a 32-byte preimage
//! whose SHA-256 equals the condition. The packet codecs (ILP v1 "Interledger
//! Payment Request", as FSPIOP v1.x specifies it, and ILP v4 Prepare, as the
//! ISO 20022 variant uses it) exist to read the end-to-end transaction object
//! for the operator (`GET /transactions/{id}`) and to build real packets in
//! tests. Nothing here panics on input: every decoder returns an error.
//!
//! Everything on the wire is base64url (RFC 4648 §5): output has no padding;
//! input may carry padding.
//!
//! Packet layouts (ASN.1 OER, lengths in OER "variable length" form: one byte
//! below 128, else `0x80 | n` followed by an n-byte big-endian length):
//!
//! ```text
//! v1 payment:  01 <len> { amount:u64be  <len> account(IA5)  <len> data  [extensions: 00] }
//! v4 prepare:  0c <len> { amount:u64be  expiresAt:17 ASCII "YYYYMMDDHHmmssSSS" (UTC)
//!                         executionCondition:32  <len> destination(IA5)  <len> data }
//! ```
//!
//! In Mojaloop the v1 `data` holds base64url(JSON Transaction object) as ASCII
//! text (the SDK scheme adapter and the Testing Toolkit); older samples hold
//! raw JSON or other text.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use sha2::{Digest, Sha256};

/// ILP v1 packet type: Interledger Payment Request (IlpPayment).
pub const TYPE_V1_PAYMENT: u8 = 1;
/// ILP v4 packet type: Prepare.
pub const TYPE_V4_PREPARE: u8 = 12;

/// Longest OER length prefix we accept (4 bytes is far above the FSPIOP
/// 32768-character packet limit).
const MAX_LENGTH_OCTETS: usize = 4;

/// URL-safe alphabet, no padding on output, padding optional on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IlpError {
    #[error("not base64url: {0}")]
    Base64(String),
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength { expected: usize, actual: usize },
    #[error("empty packet")]
    Empty,
    #[error("unknown ILP packet type {0}")]
    UnknownType(u8),
    #[error("packet truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid length prefix for {0}")]
    BadLength(&'static str),
    #[error("{0} bytes after the end of the packet")]
    TrailingBytes(usize),
    #[error("{0} is not a text string")]
    NotText(&'static str),
    #[error("invalid expiresAt timestamp")]
    BadTimestamp,
}

/// base64url without padding.
pub fn b64url_encode(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// base64url, with or without padding.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, IlpError> {
    B64URL
        .decode(text.as_bytes())
        .map_err(|e| IlpError::Base64(e.to_string()))
}

/// base64url(SHA-256(fulfilment)); the fulfilment must decode to exactly 32 bytes.
pub fn condition_of_fulfilment(fulfilment_b64url: &str) -> Result<String, IlpError> {
    let preimage = b64url_decode(fulfilment_b64url)?;
    if preimage.len() != 32 {
        return Err(IlpError::WrongLength {
            expected: 32,
            actual: preimage.len(),
        });
    }
    Ok(b64url_encode(&Sha256::digest(&preimage)))
}

/// Whether the text is base64url of exactly 32 bytes (a valid condition).
pub fn is_32_byte_value(b64url: &str) -> bool {
    matches!(b64url_decode(b64url), Ok(bytes) if bytes.len() == 32)
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let mut inner_pad = [0x36u8; BLOCK];
    let mut outer_pad = [0x5cu8; BLOCK];
    for ((i, o), k) in inner_pad
        .iter_mut()
        .zip(outer_pad.iter_mut())
        .zip(block_key)
    {
        *i ^= k;
        *o ^= k;
    }
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The payee's fulfilment as the FSPIOP spec describes it:
/// base64url(HMAC-SHA256(secret, the ilpPacket text as sent)).
pub fn fulfilment_for(secret: &[u8], ilp_packet_b64url: &str) -> String {
    b64url_encode(&hmac_sha256(secret, ilp_packet_b64url.as_bytes()))
}

/// The condition matching [`fulfilment_for`].
pub fn condition_for(secret: &[u8], ilp_packet_b64url: &str) -> String {
    b64url_encode(&Sha256::digest(hmac_sha256(
        secret,
        ilp_packet_b64url.as_bytes(),
    )))
}

// ---------------------------------------------------------------------------
// OER writing and reading

fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn write_var_octets(out: &mut Vec<u8>, bytes: &[u8]) {
    write_length(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn envelope(packet_type: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(packet_type);
    write_var_octets(&mut out, content);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], IlpError> {
        if n > self.bytes.len() {
            return Err(IlpError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, IlpError> {
        Ok(self.take(1, what)?[0])
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, IlpError> {
        let bytes = self.take(8, what)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(bytes);
        Ok(u64::from_be_bytes(buf))
    }

    fn length(&mut self, what: &'static str) -> Result<usize, IlpError> {
        let first = self.u8(what)?;
        if first & 0x80 == 0 {
            return Ok(first as usize);
        }
        let octets = (first & 0x7f) as usize;
        if octets == 0 || octets > MAX_LENGTH_OCTETS {
            return Err(IlpError::BadLength(what));
        }
        Ok(self
            .take(octets, what)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize))
    }

    fn var_octets(&mut self, what: &'static str) -> Result<&'a [u8], IlpError> {
        let len = self.length(what)?;
        self.take(len, what)
    }

    fn var_text(&mut self, what: &'static str) -> Result<String, IlpError> {
        let bytes = self.var_octets(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| IlpError::NotText(what))
    }
}

/// Splits `type <len> content` and checks the envelope is the whole packet.
fn open_envelope(bytes: &[u8]) -> Result<(u8, Reader<'_>), IlpError> {
    let mut reader = Reader { bytes };
    let packet_type = reader.u8("packet type").map_err(|_| IlpError::Empty)?;
    let content = reader.var_octets("packet content")?;
    if !reader.bytes.is_empty() {
        return Err(IlpError::TrailingBytes(reader.bytes.len()));
    }
    Ok((packet_type, Reader { bytes: content }))
}

// ---------------------------------------------------------------------------
// ILP v1 payment

/// An ILP v1 Interledger Payment Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IlpPayment {
    /// Amount in the currency's minor units.
    pub amount: u64,
    /// ILP address, e.g. `g.payeefsp.msisdn.123`.
    pub account: String,
    pub data: Vec<u8>,
}

/// base64url of an ILP v1 payment packet (with the empty extensions byte
/// that FSPIOP samples and the Mojaloop SDK write).
pub fn encode_v1(amount: u64, account: &str, data: &[u8]) -> String {
    let mut content = Vec::with_capacity(data.len() + account.len() + 16);
    content.extend_from_slice(&amount.to_be_bytes());
    write_var_octets(&mut content, account.as_bytes());
    write_var_octets(&mut content, data);
    content.push(0); // extensions: none
    b64url_encode(&envelope(TYPE_V1_PAYMENT, &content))
}

/// Decodes an ILP v1 payment packet. Extensions after `data`, if any, are ignored.
pub fn decode_v1(b64url: &str) -> Result<IlpPayment, IlpError> {
    decode_v1_bytes(&b64url_decode(b64url)?)
}

fn decode_v1_bytes(bytes: &[u8]) -> Result<IlpPayment, IlpError> {
    let (packet_type, mut content) = open_envelope(bytes)?;
    if packet_type != TYPE_V1_PAYMENT {
        return Err(IlpError::UnknownType(packet_type));
    }
    let amount = content.u64("amount")?;
    let account = content.var_text("account")?;
    let data = content.var_octets("data")?.to_vec();
    Ok(IlpPayment {
        amount,
        account,
        data,
    })
}

// ---------------------------------------------------------------------------
// ILP v4 prepare

/// An ILP v4 Prepare packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IlpPrepare {
    pub amount: u64,
    /// Millisecond precision (the wire format carries milliseconds).
    pub expires_at: DateTime<Utc>,
    pub execution_condition: [u8; 32],
    pub destination: String,
    pub data: Vec<u8>,
}

/// `YYYYMMDDHHmmssSSS` in UTC; years outside 0..=9999 are clamped.
fn generalized_time(at: DateTime<Utc>) -> String {
    let (year, month, day, hour, minute, second, milli) = if at.year() > 9999 {
        (9999, 12, 31, 23, 59, 59, 999)
    } else if at.year() < 0 {
        (0, 1, 1, 0, 0, 0, 0)
    } else {
        (
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.timestamp_subsec_millis().min(999),
        )
    };
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}{second:02}{milli:03}")
}

fn parse_generalized_time(bytes: &[u8]) -> Result<DateTime<Utc>, IlpError> {
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(IlpError::BadTimestamp);
    }
    let num = |from: usize, to: usize| {
        bytes[from..to]
            .iter()
            .fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'))
    };
    NaiveDate::from_ymd_opt(num(0, 4) as i32, num(4, 6), num(6, 8))
        .and_then(|d| d.and_hms_milli_opt(num(8, 10), num(10, 12), num(12, 14), num(14, 17)))
        .map(|naive| Utc.from_utc_datetime(&naive))
        .ok_or(IlpError::BadTimestamp)
}

/// base64url of an ILP v4 Prepare packet.
pub fn encode_v4_prepare(
    amount: u64,
    expires_at: DateTime<Utc>,
    condition: [u8; 32],
    destination: &str,
    data: &[u8],
) -> String {
    let mut content = Vec::with_capacity(data.len() + destination.len() + 64);
    content.extend_from_slice(&amount.to_be_bytes());
    content.extend_from_slice(generalized_time(expires_at).as_bytes());
    content.extend_from_slice(&condition);
    write_var_octets(&mut content, destination.as_bytes());
    write_var_octets(&mut content, data);
    b64url_encode(&envelope(TYPE_V4_PREPARE, &content))
}

/// Decodes an ILP v4 Prepare packet.
pub fn decode_v4_prepare(b64url: &str) -> Result<IlpPrepare, IlpError> {
    decode_v4_bytes(&b64url_decode(b64url)?)
}

fn decode_v4_bytes(bytes: &[u8]) -> Result<IlpPrepare, IlpError> {
    let (packet_type, mut content) = open_envelope(bytes)?;
    if packet_type != TYPE_V4_PREPARE {
        return Err(IlpError::UnknownType(packet_type));
    }
    let amount = content.u64("amount")?;
    let expires_at = parse_generalized_time(content.take(17, "expiresAt")?)?;
    let mut execution_condition = [0u8; 32];
    execution_condition.copy_from_slice(content.take(32, "executionCondition")?);
    let destination = content.var_text("destination")?;
    let data = content.var_octets("data")?.to_vec();
    Ok(IlpPrepare {
        amount,
        expires_at,
        execution_condition,
        destination,
        data,
    })
}

// ---------------------------------------------------------------------------
// Either version

/// What a packet of either version says.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedIlp {
    /// 1 or 4.
    pub version: u8,
    pub amount: u64,
    /// v1 `account` or v4 `destination`.
    pub account: String,
    pub data: Vec<u8>,
    /// `data` read as a JSON object (the Mojaloop Transaction), if it is one.
    pub transaction: Option<serde_json::Value>,
}

/// Decodes an ILP v4 Prepare (first byte 12) or an ILP v1 payment (first byte 1).
pub fn decode_packet(b64url: &str) -> Result<DecodedIlp, IlpError> {
    let bytes = b64url_decode(b64url)?;
    let (version, amount, account, data) = match bytes.first() {
        None => return Err(IlpError::Empty),
        Some(&TYPE_V4_PREPARE) => {
            let p = decode_v4_bytes(&bytes)?;
            (4, p.amount, p.destination, p.data)
        }
        Some(&TYPE_V1_PAYMENT) => {
            let p = decode_v1_bytes(&bytes)?;
            (1, p.amount, p.account, p.data)
        }
        Some(&other) => return Err(IlpError::UnknownType(other)),
    };
    let transaction = transaction_of(&data);
    Ok(DecodedIlp {
        version,
        amount,
        account,
        data,
        transaction,
    })
}

/// The JSON object in packet data: base64url (or base64) text of JSON, as
/// Mojaloop writes it, else the JSON itself. Anything else is `None`.
pub fn transaction_of(data: &[u8]) -> Option<serde_json::Value> {
    let object = |bytes: &[u8]| match serde_json::from_slice(bytes) {
        Ok(value @ serde_json::Value::Object(_)) => Some(value),
        _ => None,
    };
    if let Ok(text) = std::str::from_utf8(data) {
        let url_safe: String = text
            .trim()
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        if let Some(value) = b64url_decode(&url_safe).ok().and_then(|b| object(&b)) {
            return Some(value);
        }
    }
    object(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IlpPacket example of the FSPIOP v1.0/v1.1 specification.
    const SPEC_SAMPLE: &str = "AYIBgQAAAAAAAASwNGxldmVsb25lLmRmc3AxLm1lci45T2RTOF81MDdqUUZERmZlakgyOVc4bXFmNEpLMHlGTFGCAUBQU0svMS4wCk5vbmNlOiB1SXlweUYzY3pYSXBFdzVVc05TYWh3CkVuY3J5cHRpb246IG5vbmUKUGF5bWVudC1JZDogMTMyMzZhM2ItOGZhOC00MTYzLTg0NDctNGMzZWQzZGE5OGE3CgpDb250ZW50LUxlbmd0aDogMTM1CkNvbnRlbnQtVHlwZTogYXBwbGljYXRpb24vanNvbgpTZW5kZXItSWRlbnRpZmllcjogOTI4MDYzOTEKCiJ7XCJmZWVcIjowLFwidHJhbnNmZXJDb2RlXCI6XCJpbnZvaWNlXCIsXCJkZWJpdE5hbWVcIjpcImFsaWNlIGNvb3BlclwiLFwiY3JlZGl0TmFtZVwiOlwibWVyIGNoYW50XCIsXCJkZWJpdElkZW50aWZpZXJcIjpcIjkyODA2MzkxXCJ9IgA";

    /// A packet as the Mojaloop SDK writes it (quoting-service test data):
    /// data = ASCII base64url of the JSON Transaction, amount 1 USD = 100.
    const SDK_SAMPLE: &str = "AYICSwAAAAAAAABkFGcuZ3JlZW5iYW5rLm1zaXNkbi4xggIqZXlKMGNtRnVjMkZqZEdsdmJrbGtJam9pTUdaaVlXWXhZVFV0WkRneVlpMDFZbUptTFRsbVptVXRPV1E0TldabFpEbGpabVE0SWl3aWNYVnZkR1ZKWkNJNklqSXlORE5tWkdKbExUVmtaV0V0TTJGaVpDMWhNakV3TFRNM09EQmxOMlkwWmpGbU5TSXNJbkJoZVdWbElqcDdJbkJoY25SNVNXUkpibVp2SWpwN0luQmhjblI1U1dSVWVYQmxJam9pVFZOSlUwUk9JaXdpY0dGeWRIbEpaR1Z1ZEdsbWFXVnlJam9pTVNJc0ltWnpjRWxrSWpvaVozSmxaVzVpWVc1ckluMTlMQ0p3WVhsbGNpSTZleUp3WVhKMGVVbGtTVzVtYnlJNmV5SndZWEowZVVsa1ZIbHdaU0k2SWsxVFNWTkVUaUlzSW5CaGNuUjVTV1JsYm5ScFptbGxjaUk2SWpFaUxDSm1jM0JKWkNJNkltSnNkV1ZpWVc1ckluMTlMQ0poYlc5MWJuUWlPbnNpWTNWeWNtVnVZM2tpT2lKVlUwUWlMQ0poYlc5MWJuUWlPaUl4SW4wc0luUnlZVzV6WVdOMGFXOXVWSGx3WlNJNmV5SnpZMlZ1WVhKcGJ5STZJa1JGVUU5VFNWUWlMQ0pwYm1sMGFXRjBiM0lpT2lKUVFWbEZVaUlzSW1sdWFYUnBZWFJ2Y2xSNWNHVWlPaUpDVlZOSlRrVlRVeUo5ZlEA";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn ilp_spec_sample_decodes_as_v1_and_round_trips() {
        let decoded = decode_packet(SPEC_SAMPLE).unwrap();
        assert_eq!(decoded.version, 1);
        assert_eq!(decoded.amount, 1200);
        assert_eq!(
            decoded.account,
            "levelone.dfsp1.mer.9OdS8_507jQFDFfejH29W8mqf4JK0yFLQ"
        );
        assert_eq!(decoded.data.len(), 320);
        assert!(decoded.data.starts_with(b"PSK/1.0\nNonce: "));
        assert_eq!(decoded.transaction, None);
        // Same bytes, extensions byte included.
        assert_eq!(
            encode_v1(decoded.amount, &decoded.account, &decoded.data),
            SPEC_SAMPLE
        );
        // Padding on input is tolerated.
        let padded = format!(
            "{SPEC_SAMPLE}{}",
            "=".repeat((4 - SPEC_SAMPLE.len() % 4) % 4)
        );
        assert_eq!(decode_packet(&padded).unwrap(), decoded);
    }

    #[test]
    fn ilp_sdk_sample_has_a_json_transaction() {
        let decoded = decode_packet(SDK_SAMPLE).unwrap();
        assert_eq!(decoded.version, 1);
        assert_eq!(decoded.amount, 100);
        assert_eq!(decoded.account, "g.greenbank.msisdn.1");
        let tx = decoded.transaction.expect("transaction");
        assert_eq!(tx["transactionId"], "0fbaf1a5-d82b-5bbf-9ffe-9d85fed9cfd8");
        assert_eq!(tx["payee"]["partyIdInfo"]["fspId"], "greenbank");
        assert_eq!(tx["amount"]["amount"], "1");
        assert_eq!(
            encode_v1(decoded.amount, &decoded.account, &decoded.data),
            SDK_SAMPLE
        );
    }

    #[test]
    fn ilp_v1_round_trip_with_own_json_transaction() {
        let tx = serde_json::json!({
            "transactionId": "5d8c6a4e-1b0e-4b55-9a49-1c1d3e7c2f11",
            "quoteId": "0f5f2b6a-6a8e-4e1e-9c55-7a0b1c2d3e4f",
            "payee": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": "27713803912", "fspId": "payeefsp"}},
            "payer": {"partyIdInfo": {"partyIdType": "MSISDN", "partyIdentifier": "27713803911", "fspId": "payerfsp"}},
            "amount": {"amount": "123.45", "currency": "USD"},
            "transactionType": {"scenario": "TRANSFER", "initiator": "PAYER", "initiatorType": "CONSUMER"}
        });
        let data = b64url_encode(tx.to_string().as_bytes());
        let packet = encode_v1(12345, "g.payeefsp.msisdn.27713803912", data.as_bytes());
        let decoded = decode_packet(&packet).unwrap();
        assert_eq!(decoded.version, 1);
        assert_eq!(decoded.amount, 12345);
        assert_eq!(decoded.account, "g.payeefsp.msisdn.27713803912");
        assert_eq!(decoded.data, data.as_bytes());
        assert_eq!(decoded.transaction.as_ref(), Some(&tx));
        assert_eq!(
            decode_v1(&packet).unwrap(),
            IlpPayment {
                amount: 12345,
                account: "g.payeefsp.msisdn.27713803912".into(),
                data: data.into_bytes(),
            }
        );
        // Raw JSON in data is read too.
        let raw = encode_v1(1, "g.x", tx.to_string().as_bytes());
        assert_eq!(decode_packet(&raw).unwrap().transaction, Some(tx));
        // Long lengths: a 1000-byte account and 70000-byte data.
        let account = "g.".to_string() + &"a".repeat(998);
        let big = vec![7u8; 70_000];
        let packet = encode_v1(u64::MAX, &account, &big);
        let decoded = decode_v1(&packet).unwrap();
        assert_eq!(
            (decoded.amount, decoded.account, decoded.data),
            (u64::MAX, account, big)
        );
    }

    #[test]
    fn ilp_v4_round_trip() {
        let expires = Utc.with_ymd_and_hms(2017, 12, 23, 1, 21, 40).unwrap()
            + chrono::Duration::milliseconds(549);
        let condition: [u8; 32] = Sha256::digest(b"condition").into();
        let packet = encode_v4_prepare(107, expires, condition, "example.alice", b"hello");
        let bytes = b64url_decode(&packet).unwrap();
        assert_eq!(bytes[0], 12);
        assert_eq!(&bytes[10..27], b"20171223012140549");
        let p = decode_v4_prepare(&packet).unwrap();
        assert_eq!(
            p,
            IlpPrepare {
                amount: 107,
                expires_at: expires,
                execution_condition: condition,
                destination: "example.alice".into(),
                data: b"hello".to_vec(),
            }
        );
        let d = decode_packet(&packet).unwrap();
        assert_eq!(
            (d.version, d.amount, d.account.as_str()),
            (4, 107, "example.alice")
        );
        assert_eq!(d.transaction, None);
        // With a Mojaloop transaction in data.
        let tx = serde_json::json!({"transactionId": "abc", "amount": {"amount": "1", "currency": "EUR"}});
        let data = b64url_encode(tx.to_string().as_bytes());
        let packet = encode_v4_prepare(100, expires, condition, "g.payee", data.as_bytes());
        assert_eq!(decode_packet(&packet).unwrap().transaction, Some(tx));
    }

    /// The v4 Prepare layout, byte by byte (RFC 0027 field order).
    #[test]
    fn ilp_v4_layout_is_byte_exact() {
        let expires = Utc.with_ymd_and_hms(2017, 12, 23, 1, 21, 40).unwrap()
            + chrono::Duration::milliseconds(549);
        let packet = encode_v4_prepare(107, expires, [0xab; 32], "example.alice", &[1, 2, 3]);
        let bytes = b64url_decode(&packet).unwrap();
        let mut expected = vec![12, 8 + 17 + 32 + 14 + 4];
        expected.extend_from_slice(&107u64.to_be_bytes());
        expected.extend_from_slice(b"20171223012140549");
        expected.extend_from_slice(&[0xab; 32]);
        expected.push(13);
        expected.extend_from_slice(b"example.alice");
        expected.extend_from_slice(&[3, 1, 2, 3]);
        assert_eq!(hex(&bytes), hex(&expected));
    }

    /// The Prepare example of the `ilp-packet` (interledgerjs) README.
    #[test]
    fn ilp_v4_interledgerjs_sample_round_trips() {
        let hex_packet = "0c68000000000000006b323031373132323330313231343035343974e1136dc71c9e5f283bec83461cbf1261c4014f72d48f8dd65453a0b84e7de10d6578616d706c652e616c696365205db343fdc41898f6df4202329139dc242dd0f558a811b46b28918fdab37c6cb0";
        let bytes: Vec<u8> = (0..hex_packet.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex_packet[i..i + 2], 16).unwrap())
            .collect();
        let packet = b64url_encode(&bytes);
        let p = decode_v4_prepare(&packet).unwrap();
        assert_eq!(p.amount, 107);
        assert_eq!(p.expires_at.to_rfc3339(), "2017-12-23T01:21:40.549+00:00");
        assert_eq!(p.destination, "example.alice");
        assert_eq!(p.data.len(), 32);
        assert_eq!(
            encode_v4_prepare(
                p.amount,
                p.expires_at,
                p.execution_condition,
                &p.destination,
                &p.data
            ),
            packet
        );
        assert_eq!(decode_packet(&packet).unwrap().version, 4);
    }

    #[test]
    fn ilp_hmac_matches_rfc4231() {
        // Test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: key longer than the block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        // Test case 1.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn ilp_condition_of_known_fulfilment() {
        // The IlpFulfilment example of the FSPIOP spec and its condition.
        assert_eq!(
            condition_of_fulfilment("WLctttbu2HvTsa1XWvUoGRcQozHsqeu9Ahl2JW9Bsu8").unwrap(),
            "f5sqb7tBTWPd5Y8BDFdMm9BJR_MNI4isf8p8n4D5pHA"
        );
        assert_eq!(
            condition_of_fulfilment("WLctttbu2HvTsa1XWvUoGRcQozHsqeu9Ahl2JW9Bsu8=").unwrap(),
            "f5sqb7tBTWPd5Y8BDFdMm9BJR_MNI4isf8p8n4D5pHA"
        );
        assert!(is_32_byte_value(
            "f5sqb7tBTWPd5Y8BDFdMm9BJR_MNI4isf8p8n4D5pHA"
        ));
        assert!(!is_32_byte_value(
            "f5sqb7tBTWPd5Y8BDFdMm9BJR_MNI4isf8p8n4D5pH"
        ));
        assert!(!is_32_byte_value(
            "f5sqb7tBTWPd5Y8BDFdMm9BJR_MNI4isf8p8n4D5pHAAA"
        ));
        assert!(!is_32_byte_value(
            "f5sqb7tBTWPd5Y8BDFdMm9BJR/MNI4isf8p8n4D5pHA"
        ));
        assert!(!is_32_byte_value(""));
        assert!(matches!(
            condition_of_fulfilment("AAAA"),
            Err(IlpError::WrongLength {
                expected: 32,
                actual: 3
            })
        ));
        assert!(matches!(
            condition_of_fulfilment("not base64!"),
            Err(IlpError::Base64(_))
        ));
        // The payee's fulfilment hashes to the payer's condition.
        let fulfilment = fulfilment_for(b"secret", SDK_SAMPLE);
        assert_eq!(fulfilment.len(), 43);
        assert_eq!(
            condition_of_fulfilment(&fulfilment).unwrap(),
            condition_for(b"secret", SDK_SAMPLE)
        );
        assert_ne!(fulfilment, fulfilment_for(b"other", SDK_SAMPLE));
    }

    #[test]
    fn ilp_bad_input_gives_errors() {
        assert!(matches!(decode_packet(""), Err(IlpError::Empty)));
        assert!(matches!(decode_packet("@@@@"), Err(IlpError::Base64(_))));
        assert!(matches!(decode_packet("AA"), Err(IlpError::UnknownType(0))));
        let bytes = b64url_decode(SPEC_SAMPLE).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_packet(&b64url_encode(&bytes[..cut])).is_err(),
                "truncated at {cut}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_packet(&b64url_encode(&trailing)),
            Err(IlpError::TrailingBytes(1))
        ));
        // A length prefix of 0x80 (no length octets) or 0x85 (too many).
        assert!(matches!(
            decode_packet(&b64url_encode(&[1, 0x80])),
            Err(IlpError::BadLength(_))
        ));
        assert!(matches!(
            decode_packet(&b64url_encode(&[1, 0x85, 0, 0, 0, 0, 1])),
            Err(IlpError::BadLength(_))
        ));
        // v4 with a bad timestamp.
        let packet = encode_v4_prepare(1, Utc::now(), [0; 32], "g.a", b"");
        let mut bytes = b64url_decode(&packet).unwrap();
        bytes[14] = b'x';
        assert!(matches!(
            decode_packet(&b64url_encode(&bytes)),
            Err(IlpError::BadTimestamp)
        ));
        bytes[14] = b'9';
        bytes[15] = b'9'; // month 99
        assert!(matches!(
            decode_packet(&b64url_encode(&bytes)),
            Err(IlpError::BadTimestamp)
        ));
    }

    /// xorshift64*: a tiny deterministic generator for the fuzz test.
    struct Prng(u64);

    impl Prng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn ilp_fuzz_never_panics() {
        let mut rng = Prng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            b64url_decode(SPEC_SAMPLE).unwrap(),
            b64url_decode(SDK_SAMPLE).unwrap(),
            b64url_decode(&encode_v4_prepare(5, Utc::now(), [1; 32], "g.b", b"{}")).unwrap(),
        ];
        let mut decoded_ok = 0;
        for round in 0..600 {
            let bytes: Vec<u8> = match round % 3 {
                // Random bytes, first byte often a known packet type.
                0 => {
                    let len = rng.below(64);
                    let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    if let Some(first) = v.first_mut() {
                        *first = [1, 12, *first][rng.below(3)];
                    }
                    v
                }
                // A real packet with a few bytes flipped and maybe cut.
                1 => {
                    let mut v = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(v.len());
                        v[at] = rng.next() as u8;
                    }
                    let keep = v.len() - rng.below(v.len() / 2);
                    v.truncate(keep);
                    v
                }
                // Random text, not necessarily base64.
                _ => {
                    let len = rng.below(80);
                    let text: String = (0..len)
                        .map(|_| (b' ' + (rng.next() % 95) as u8) as char)
                        .collect();
                    let _ = decode_packet(&text);
                    let _ = condition_of_fulfilment(&text);
                    let _ = is_32_byte_value(&text);
                    continue;
                }
            };
            if decode_packet(&b64url_encode(&bytes)).is_ok() {
                decoded_ok += 1;
            }
            let _ = transaction_of(&bytes);
        }
        // Most mutations break the framing; some (flips in data) do not.
        assert!(decoded_ok < 600);
    }
}
