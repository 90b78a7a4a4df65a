//! Participants' callback endpoints, cached, and URL template substitution.
//!
//! The cache holds each participant's current endpoints (type -> URL
//! template) until the operator API changes them or `DELETE /endpointcache`
//! flushes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switch_storage::Store;

/// Participants kept at most; beyond it the cache starts again from empty.
const ENTRIES_MAX: usize = 100_000;

type Endpoints = Arc<HashMap<String, String>>;

#[derive(Clone)]
pub struct EndpointCache {
    store: Store,
    entries: Arc<Mutex<HashMap<String, Endpoints>>>,
}

impl EndpointCache {
    pub fn new(store: Store) -> Self {
        EndpointCache {
            store,
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoints>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The URL template of `participant` for `endpoint_type`, if registered.
    pub async fn template(
        &self,
        participant: &str,
        endpoint_type: &str,
    ) -> Result<Option<String>, String> {
        let cached = self.lock().get(participant).cloned();
        let endpoints = match cached {
            Some(endpoints) => endpoints,
            None => {
                let loaded = self.load(participant).await?;
                let mut entries = self.lock();
                if entries.len() >= ENTRIES_MAX {
                    entries.clear();
                }
                entries.insert(participant.to_string(), loaded.clone());
                loaded
            }
        };
        Ok(endpoints.get(endpoint_type).cloned())
    }

    async fn load(&self, participant: &str) -> Result<Endpoints, String> {
        let Some(found) = self
            .store
            .participant(participant)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(Arc::new(HashMap::new()));
        };
        let endpoints = self
            .store
            .endpoints(found.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(
            endpoints
                .into_iter()
                .map(|e| (e.endpoint_type, e.value))
                .collect(),
        ))
    }

    pub fn invalidate(&self, participant: &str) {
        self.lock().remove(participant);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Substitutes `{{name}}` placeholders in one pass (a substituted value is
/// not searched again); unknown placeholders stay as they are.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut url = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        url.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            url.push_str(&rest[open..]);
            return url;
        };
        let name = &after[..close];
        match values.iter().find(|(known, _)| *known == name) {
            Some((_, value)) => url.push_str(value),
            None => url.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    url.push_str(rest);
    url
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn substitutes_known_placeholders() {
        let values = [("transferId", "a{{fsp}}"), ("fsp", "p")];
        let cases = [
            (
                "http://dfsp/transfers/{{transferId}}/error",
                "http://dfsp/transfers/a{{fsp}}/error",
            ),
            // Unknown placeholders stay; a substituted value is not searched again.
            ("http://dfsp/{{other}}", "http://dfsp/{{other}}"),
            (
                "http://{{fsp}}:80/{{fsp}}/t/{{transferId}}{{ {{x}}",
                "http://p:80/p/t/a{{fsp}}{{ {{x}}",
            ),
            ("http://dfsp/{{fsp", "http://dfsp/{{fsp"),
            ("", ""),
        ];
        for (template, url) in cases {
            assert_eq!(render(template, &values), url, "{template}");
        }
    }
}
