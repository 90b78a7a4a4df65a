//! Quote persistence (off by default): each quote or bulk quote request,
//! answer and error as received, keyed by resource, id and kind, so a resend
//! can be told from a changed message.

use crate::{col, now_text, Result, Store};

/// A routed quote message.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteMessage {
    /// `quotes` or `bulkQuotes`.
    pub resource: String,
    pub quote_id: String,
    /// REQUEST, RESPONSE or ERROR.
    pub kind: String,
    pub hash: String,
    pub source_fsp: String,
    pub destination_fsp: String,
    pub body: String,
}

/// What the store made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First of its kind for the id: stored.
    New,
    /// The same message again (same hash): nothing stored.
    Resend,
    /// A different message of the same kind for the id: nothing stored.
    Changed,
}

impl Store {
    /// Stores the message unless one of its kind is already stored for the id.
    pub async fn record_quote_message(&self, message: QuoteMessage) -> Result<Recorded> {
        self.run(move |pool| async move {
            let mut tx = crate::begin_write(&pool).await?;
            let seen = sqlx::query(
                "SELECT hash FROM quote_message WHERE resource = ? AND quote_id = ? AND kind = ?",
            )
            .bind(message.resource.clone())
            .bind(message.quote_id.clone())
            .bind(message.kind.clone())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = seen {
                let hash: String = col(&row, "hash")?;
                return Ok(if hash == message.hash {
                    Recorded::Resend
                } else {
                    Recorded::Changed
                });
            }
            sqlx::query(
                "INSERT INTO quote_message (resource, quote_id, kind, hash, source_fsp, destination_fsp, body, created_date) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(message.resource)
            .bind(message.quote_id)
            .bind(message.kind)
            .bind(message.hash)
            .bind(message.source_fsp)
            .bind(message.destination_fsp)
            .bind(message.body)
            .bind(now_text())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Recorded::New)
        })
        .await
    }
}
