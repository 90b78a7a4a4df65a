//! Which FSP owns a party: the built-in oracle (registrations in the
//! switch's own database), or an external oracle over HTTP speaking the
//! Mojaloop oracle interface when the ALS admin API configured one for the
//! party id type (and currency, falling back to the type alone).
//!
//! Which external oracles are configured is cached (one database read per
//! lookup saved) until the ALS admin API changes them, on this node at once
//! and, in cluster mode, on the others at their next heartbeat, like the
//! participants' endpoints. Party registrations are not cached: a change
//! through `/participants` takes effect on the next lookup.

use std::time::Duration;

use serde_json::{json, Value};
use switch_actors::cached::Cached;
use switch_actors::{ErrorCode, FspiopError};
use switch_storage::lookup::{OracleRecord, PartyKey};
use switch_storage::Store;

/// How long one call to an external oracle may take.
const ORACLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Oracles {
    store: Store,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// The active oracle endpoints, kept until `/oracles` changes them.
    configured: Cached<Vec<OracleRecord>>,
}

fn unreachable_oracle(url: &str, reason: impl std::fmt::Display) -> FspiopError {
    FspiopError::new(
        ErrorCode::CommunicationError,
        format!("the oracle at {url} did not answer: {reason}"),
    )
}

impl Oracles {
    pub fn new(store: Store, runtime: tokio::runtime::Handle) -> Oracles {
        let client = reqwest::Client::builder()
            .timeout(ORACLE_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Oracles {
            store,
            client,
            runtime,
            configured: Cached::default(),
        }
    }

    /// Forgets the cached oracle endpoints: the admin API changed them.
    pub fn changed(&self) {
        self.configured.forget();
    }

    /// The external oracle for this key, if one is configured.
    async fn external(&self, key: &PartyKey) -> Result<Option<OracleRecord>, FspiopError> {
        let oracles = self.configured.get_or_load(|| self.store.oracles()).await?;
        Ok(choose(&oracles, key).cloned())
    }

    /// `{oracle}/participants/{Type}/{ID}[?currency=..&partySubIdOrType=..]`,
    /// every part percent-encoded.
    fn party_url(oracle: &OracleRecord, key: &PartyKey) -> String {
        let base = oracle.value.trim_end_matches('/');
        let Ok(mut url) = reqwest::Url::parse(base) else {
            return format!(
                "{base}/participants/{}/{}",
                key.party_id_type, key.party_identifier
            );
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "participants",
                &key.party_id_type,
                &key.party_identifier,
            ]);
        }
        {
            let mut query = url.query_pairs_mut();
            if !key.currency.is_empty() {
                query.append_pair("currency", &key.currency);
            }
            if !key.party_sub_id.is_empty() {
                query.append_pair("partySubIdOrType", &key.party_sub_id);
            }
        }
        let mut text = url.to_string();
        if text.ends_with('?') {
            text.pop();
        }
        text
    }

    /// Runs an HTTP exchange on the I/O runtime that owns the client.
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> Result<(u16, Value), FspiopError> {
        let client = self.client.clone();
        let shown = url.clone();
        let exchange = async move {
            let mut request = client
                .request(method, &url)
                .header("content-type", "application/json")
                .header("accept", "application/json");
            if let Some(body) = body {
                request = request.body(body.to_string());
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        };
        self.runtime
            .spawn(exchange)
            .await
            .map_err(|e| unreachable_oracle(&shown, e))?
            .map_err(|e| unreachable_oracle(&shown, e))
    }

    /// The FSPs that own the party.
    pub async fn owners(&self, key: PartyKey) -> Result<Vec<String>, FspiopError> {
        let Some(oracle) = self.external(&key).await? else {
            return Ok(self.store.party_owners(key).await?);
        };
        let url = Self::party_url(&oracle, &key);
        let (status, body) = self.call(reqwest::Method::GET, url.clone(), None).await?;
        if status == 404 {
            return Ok(Vec::new());
        }
        if !(200..300).contains(&status) {
            return Err(unreachable_oracle(&url, format!("HTTP {status}")));
        }
        let mut owners = Vec::new();
        for entry in body["partyList"].as_array().into_iter().flatten() {
            if let Some(fsp) = entry["fspId"].as_str() {
                let sub = entry["partySubIdOrType"].as_str().unwrap_or_default();
                if (key.party_sub_id.is_empty() || sub.is_empty() || sub == key.party_sub_id)
                    && !owners.iter().any(|o| o == fsp)
                {
                    owners.push(fsp.to_string());
                }
            }
        }
        Ok(owners)
    }

    /// Registers `fsp`; `Ok(Some(owner))` when another FSP already owns the party.
    pub async fn register(&self, key: PartyKey, fsp: &str) -> Result<Option<String>, FspiopError> {
        let Some(oracle) = self.external(&key).await? else {
            return Ok(self.store.register_party(key, fsp).await?);
        };
        let url = Self::party_url(&oracle, &key);
        let mut body = json!({ "fspId": fsp });
        if !key.currency.is_empty() {
            body["currency"] = json!(key.currency);
        }
        if !key.party_sub_id.is_empty() {
            body["partySubIdOrType"] = json!(key.party_sub_id);
        }
        let (status, answer) = self
            .call(reqwest::Method::POST, url.clone(), Some(body))
            .await?;
        match status {
            200..=299 => Ok(None),
            400..=499 => Err(FspiopError::new(
                ErrorCode::AddPartyInformationError,
                format!("the oracle refused the registration: {answer}"),
            )),
            _ => Err(unreachable_oracle(&url, format!("HTTP {status}"))),
        }
    }

    /// Removes `fsp`'s registration; returns whether one was removed.
    pub async fn unregister(&self, key: PartyKey, fsp: &str) -> Result<bool, FspiopError> {
        let Some(oracle) = self.external(&key).await? else {
            return Ok(self.store.unregister_party(key, fsp).await? > 0);
        };
        if !self.owners(key.clone()).await?.iter().any(|o| o == fsp) {
            return Ok(false);
        }
        let url = Self::party_url(&oracle, &key);
        let (status, _) = self
            .call(reqwest::Method::DELETE, url.clone(), None)
            .await?;
        match status {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(unreachable_oracle(&url, format!("HTTP {status}"))),
        }
    }
}

/// The oracle for the key's type: the one for its currency, else the one
/// for every currency.
fn choose<'a>(oracles: &'a [OracleRecord], key: &PartyKey) -> Option<&'a OracleRecord> {
    let mut for_type = oracles
        .iter()
        .filter(|o| o.party_id_type == key.party_id_type);
    let for_currency = for_type
        .clone()
        .find(|o| o.currency.as_deref() == Some(key.currency.as_str()));
    for_currency.or_else(|| for_type.find(|o| o.currency.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oracle(value: &str) -> OracleRecord {
        OracleRecord {
            id: 1,
            party_id_type: "MSISDN".into(),
            endpoint_type: "URL".into(),
            value: value.into(),
            currency: None,
            is_default: true,
            is_active: true,
            created_date: String::new(),
        }
    }

    fn key(identifier: &str, currency: &str, sub: &str) -> PartyKey {
        PartyKey {
            party_id_type: "EMAIL".into(),
            party_identifier: identifier.into(),
            party_sub_id: sub.into(),
            currency: currency.into(),
        }
    }

    #[test]
    fn the_oracle_for_the_currency_comes_before_the_one_for_every_currency() {
        let mut usd = oracle("http://usd");
        usd.party_id_type = "EMAIL".into();
        usd.currency = Some("USD".into());
        let mut every = oracle("http://every");
        every.party_id_type = "EMAIL".into();
        let msisdn = oracle("http://msisdn");
        let all = [msisdn, every, usd];
        let chosen = |currency| choose(&all, &key("a", currency, "")).map(|o| o.value.as_str());
        assert_eq!(chosen("USD"), Some("http://usd"));
        assert_eq!(chosen("EUR"), Some("http://every"));
        assert_eq!(chosen(""), Some("http://every"));
        assert_eq!(choose(&all[2..], &key("a", "EUR", "")), None);
    }

    #[test]
    fn party_urls_are_encoded() {
        assert_eq!(
            Oracles::party_url(
                &oracle("http://oracle:8444/"),
                &key("bob@example.com", "", "")
            ),
            "http://oracle:8444/participants/EMAIL/bob@example.com"
        );
        assert_eq!(
            Oracles::party_url(&oracle("http://oracle:8444/base"), &key("a b?c#d", "USD", "x y")),
            "http://oracle:8444/base/participants/EMAIL/a%20b%3Fc%23d?currency=USD&partySubIdOrType=x+y"
        );
    }
}
