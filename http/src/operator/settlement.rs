//! The central-settlement API under `/v2`: settlement windows, settlements
//! and their participant accounts, and settlement reports (JSON and CSV).
//!
//! Reads go straight to storage. Every change goes through the settlement
//! actor, which serialises window closes and settlement steps; in cluster
//! mode that is the actor on the owner of `SETTLEMENT_SLOT`, and a change
//! received by another node is forwarded there whole.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use switch_actors::settlement::{
    AbortSettlement, AccountUpdate, CloseWindow, CreateSettlement, SettlementKey, UpdateAccounts,
};
use switch_actors::{ErrorCode, FspiopError};
use switch_storage::settlement::{
    AccountTotals, SettlementFilter, SettlementRecord, WindowContentRecord, WindowFilter,
    WindowRecord,
};

use crate::cluster::forward_settlement_change;
use crate::errors::{error_body, ApiError, ApiResult};
use crate::json::number;
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v2/health").route(web::get().to(super::health)));
    cfg.service(web::resource("/v2/settlementWindows").route(web::get().to(list_windows)));
    cfg.service(
        web::resource("/v2/settlementWindows/{id}")
            .route(web::get().to(get_window))
            .route(web::post().to(close_window)),
    );
    cfg.service(
        web::resource("/v2/settlementWindows/{id}/report").route(web::get().to(window_report)),
    );
    cfg.service(
        web::resource("/v2/settlements")
            .route(web::get().to(list_settlements))
            .route(web::post().to(create_settlement)),
    );
    cfg.service(
        web::resource("/v2/settlements/{id}")
            .route(web::get().to(get_settlement))
            .route(web::put().to(update_settlement)),
    );
    cfg.service(
        web::resource("/v2/settlements/{id}/report").route(web::get().to(settlement_report)),
    );
    cfg.service(
        web::resource("/v2/settlements/{sid}/participants/{pid}")
            .route(web::get().to(get_participant))
            .route(web::put().to(update_participant)),
    );
    cfg.service(
        web::resource("/v2/settlements/{sid}/participants/{pid}/accounts/{aid}")
            .route(web::get().to(get_account))
            .route(web::put().to(update_account)),
    );
}

fn validation(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::GenericValidationError, detail)
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::new(
                ErrorCode::MalformedSyntax,
                format!("request body is not valid JSON: {e}"),
            )
        } else if e.to_string().starts_with("missing field") {
            ApiError::new(ErrorCode::MissingMandatoryElement, e.to_string())
        } else {
            validation(format!("request body does not match the schema: {e}"))
        }
    })
}

fn parse_id(text: &str, what: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| validation(format!("{what} must be a positive integer")))
}

async fn ask<M>(state: &AppState, message: M) -> ApiResult<M::Result>
where
    M: actix::Message + Clone + Send + 'static,
    M::Result: Send,
    switch_actors::settlement::SettlementActor: actix::Handler<M>,
{
    let timeout = std::time::Duration::from_millis(state.config.settlement_reply_timeout_ms);
    let addr = state.settlements.get(&SettlementKey);
    switch_cluster::ask(&addr, message, timeout)
        .await
        .map_err(|error| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("the settlement actor did not answer: {error:?}"),
            )
        })
}

// -- windows ---------------------------------------------------------------

fn content_json(content: &WindowContentRecord) -> Value {
    let mut body = json!({
        "id": content.id,
        "state": content.state,
        "ledgerAccountType": content.ledger_account_type,
        "currencyId": content.currency,
        "createdDate": content.created_date,
        "changedDate": content.changed_date,
    });
    if let Some(settlement) = content.settlement_id {
        body["settlementId"] = json!(settlement);
    }
    body
}

fn window_json(window: &WindowRecord) -> Value {
    json!({
        "id": window.id,
        "state": window.state,
        "reason": window.reason,
        "createdDate": window.created_date,
        "changedDate": window.changed_date.clone().unwrap_or_else(|| window.created_date.clone()),
        "content": window.content.iter().map(content_json).collect::<Vec<_>>(),
    })
}

async fn window_or_refusal(state: &AppState, id: i64) -> ApiResult<WindowRecord> {
    state
        .store
        .window(id)
        .await?
        .ok_or_else(|| validation(format!("settlementWindowId: {id} not found")))
}

async fn get_window(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&path, "id")?;
    Ok(HttpResponse::Ok().json(window_json(&window_or_refusal(&state, id).await?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WindowQuery {
    participant_id: Option<i64>,
    state: Option<String>,
    from_date_time: Option<String>,
    to_date_time: Option<String>,
    currency: Option<String>,
}

async fn list_windows(
    state: web::Data<AppState>,
    query: web::Query<WindowQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    if q.participant_id.is_none()
        && q.state.is_none()
        && q.from_date_time.is_none()
        && q.to_date_time.is_none()
        && q.currency.is_none()
    {
        return Err(validation(
            "Use at least one parameter: participantId, state, fromDateTime, toDateTime, currency",
        ));
    }
    let filter = WindowFilter {
        participant_id: q.participant_id,
        state: q.state,
        from_date: q.from_date_time,
        to_date: q.to_date_time,
        currency: q.currency,
    };
    let windows = state.store.windows(filter).await?;
    Ok(HttpResponse::Ok().json(windows.iter().map(window_json).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
struct ClosePayload {
    state: String,
    reason: String,
}

async fn close_window(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    if let Some(answer) = forward_settlement_change(&state, &request, &bytes).await? {
        return Ok(answer);
    }
    let id = parse_id(&path, "id")?;
    let payload: ClosePayload = parse(&bytes)?;
    if payload.state != "CLOSED" {
        return Err(validation("\"state\" must be CLOSED"));
    }
    window_or_refusal(&state, id).await?;
    let next = ask(
        &state,
        CloseWindow {
            id,
            reason: payload.reason,
        },
    )
    .await??;
    Ok(HttpResponse::Ok().json(window_json(&window_or_refusal(&state, next).await?)))
}

// -- settlements -----------------------------------------------------------

async fn settlement_or_refusal(state: &AppState, id: i64) -> ApiResult<SettlementRecord> {
    state
        .store
        .settlement(id)
        .await?
        .ok_or_else(|| validation(format!("settlementId: {id} not found")))
}

/// The settlement in the reference shape; `refused` adds `errorInformation`
/// to accounts whose step was refused; `only` keeps one participant.
async fn settlement_json(
    state: &AppState,
    settlement: &SettlementRecord,
    refused: &[(AccountUpdate, FspiopError)],
    only: Option<i64>,
) -> ApiResult<Value> {
    let models = state.store.settlement_models().await?;
    let model = models
        .iter()
        .find(|m| m.id == settlement.model_id)
        .map(|m| m.name.clone());
    let mut windows = Vec::new();
    for id in &settlement.window_ids {
        if let Some(window) = state.store.window(*id).await? {
            windows.push(window_json(&window));
        }
    }
    let mut participants: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for account in &settlement.accounts {
        if only.is_some_and(|p| p != account.participant_id) {
            continue;
        }
        let mut body = json!({
            "id": account.account_id,
            "state": account.state,
            "reason": account.reason,
            "createdDate": account.created_date,
            "changedDate": account.changed_date,
            "netSettlementAmount": {"amount": number(account.net_amount), "currency": account.currency},
        });
        if let Some(reference) = &account.external_reference {
            body["externalReference"] = json!(reference);
        }
        let refusal = refused.iter().find(|(u, _)| {
            u.account_id == account.account_id && u.participant_id == account.participant_id
        });
        if let Some((_, error)) = refusal {
            body["errorInformation"] = error_body(error)["errorInformation"].clone();
        }
        participants
            .entry(account.participant_id)
            .or_default()
            .push(body);
    }
    Ok(json!({
        "id": settlement.id,
        "state": settlement.state,
        "reason": settlement.reason,
        "createdDate": settlement.created_date,
        "changedDate": settlement.changed_date,
        "settlementModel": model,
        "settlementWindows": windows,
        "participants": participants
            .into_iter()
            .map(|(id, accounts)| json!({"id": id, "accounts": accounts}))
            .collect::<Vec<_>>(),
    }))
}

async fn answer(
    state: &AppState,
    id: i64,
    refused: &[(AccountUpdate, FspiopError)],
    only: Option<i64>,
) -> ApiResult<HttpResponse> {
    let settlement = settlement_or_refusal(state, id).await?;
    Ok(HttpResponse::Ok().json(settlement_json(state, &settlement, refused, only).await?))
}

#[derive(Deserialize)]
struct WindowId {
    id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettlementPayload {
    settlement_model: String,
    reason: String,
    settlement_windows: Vec<WindowId>,
}

async fn create_settlement(
    state: web::Data<AppState>,
    request: HttpRequest,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    if let Some(answer) = forward_settlement_change(&state, &request, &bytes).await? {
        return Ok(answer);
    }
    let payload: SettlementPayload = parse(&bytes)?;
    let message = CreateSettlement {
        model: payload.settlement_model,
        reason: payload.reason,
        window_ids: payload.settlement_windows.iter().map(|w| w.id).collect(),
    };
    let id = ask(&state, message).await??;
    answer(&state, id, &[], None).await
}

async fn get_settlement(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    answer(&state, parse_id(&path, "id")?, &[], None).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SettlementQuery {
    currency: Option<String>,
    participant_id: Option<i64>,
    settlement_window_id: Option<i64>,
    account_id: Option<i64>,
    state: Option<String>,
    from_date_time: Option<String>,
    to_date_time: Option<String>,
    from_settlement_window_date_time: Option<String>,
    to_settlement_window_date_time: Option<String>,
}

async fn list_settlements(
    state: web::Data<AppState>,
    query: web::Query<SettlementQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let window_dates =
        q.from_settlement_window_date_time.is_some() || q.to_settlement_window_date_time.is_some();
    if q.currency.is_none()
        && q.participant_id.is_none()
        && q.settlement_window_id.is_none()
        && q.account_id.is_none()
        && q.state.is_none()
        && q.from_date_time.is_none()
        && q.to_date_time.is_none()
        && !window_dates
    {
        return Err(validation(
            "Use at least one parameter: currency, participantId, settlementWindowId, accountId, state, fromDateTime, toDateTime, fromSettlementWindowDateTime, toSettlementWindowDateTime",
        ));
    }
    let filter = SettlementFilter {
        state: q.state,
        window_id: q.settlement_window_id,
        currency: q.currency,
        participant_id: q.participant_id,
        account_id: q.account_id,
        from_date: q.from_date_time,
        to_date: q.to_date_time,
    };
    let mut settlements = state.store.settlements(filter).await?;
    if window_dates {
        settlements = filter_by_window_dates(
            &state,
            settlements,
            &q.from_settlement_window_date_time,
            &q.to_settlement_window_date_time,
        )
        .await?;
    }
    let mut bodies = Vec::with_capacity(settlements.len());
    for settlement in &settlements {
        bodies.push(settlement_json(&state, settlement, &[], None).await?);
    }
    Ok(HttpResponse::Ok().json(bodies))
}

/// Keeps settlements with a window created within the dates.
async fn filter_by_window_dates(
    state: &AppState,
    settlements: Vec<SettlementRecord>,
    from: &Option<String>,
    to: &Option<String>,
) -> ApiResult<Vec<SettlementRecord>> {
    let mut kept = Vec::new();
    for settlement in settlements {
        let mut inside = false;
        for id in &settlement.window_ids {
            if let Some(window) = state.store.window(*id).await? {
                let created = window.created_date.as_str();
                inside |= from.as_deref().is_none_or(|f| created >= f)
                    && to.as_deref().is_none_or(|t| created <= t);
            }
        }
        if inside {
            kept.push(settlement);
        }
    }
    Ok(kept)
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct AccountPayload {
    id: Option<i64>,
    state: String,
    reason: Option<String>,
    external_reference: Option<String>,
}

#[derive(Deserialize)]
struct ParticipantPayload {
    id: Option<i64>,
    accounts: Vec<AccountPayload>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdatePayload {
    state: Option<String>,
    reason: Option<String>,
    participants: Option<Vec<ParticipantPayload>>,
}

fn account_update(participant_id: i64, account: AccountPayload, account_id: i64) -> AccountUpdate {
    AccountUpdate {
        participant_id,
        account_id,
        state: account.state,
        reason: account.reason,
        external_reference: account.external_reference,
    }
}

async fn apply_updates(
    state: &AppState,
    settlement_id: i64,
    updates: Vec<AccountUpdate>,
    only: Option<i64>,
) -> ApiResult<HttpResponse> {
    settlement_or_refusal(state, settlement_id).await?;
    let refused = ask(
        state,
        UpdateAccounts {
            settlement_id,
            updates,
        },
    )
    .await??;
    answer(state, settlement_id, &refused, only).await
}

async fn update_settlement(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    if let Some(answer) = forward_settlement_change(&state, &request, &bytes).await? {
        return Ok(answer);
    }
    let id = parse_id(&path, "id")?;
    let payload: UpdatePayload = parse(&bytes)?;
    match (payload.state, payload.participants) {
        (Some(target), None) if target == "ABORTED" => {
            let reason = payload.reason.ok_or_else(|| {
                ApiError::new(ErrorCode::MissingMandatoryElement, "\"reason\" is required")
            })?;
            settlement_or_refusal(&state, id).await?;
            ask(
                &state,
                AbortSettlement {
                    settlement_id: id,
                    reason,
                },
            )
            .await??;
            answer(&state, id, &[], None).await
        }
        (None, Some(participants)) => {
            let mut updates = Vec::new();
            for participant in participants {
                let pid = participant.id.ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::MissingMandatoryElement,
                        "\"participants[].id\" is required",
                    )
                })?;
                for account in participant.accounts {
                    let aid = account.id.ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::MissingMandatoryElement,
                            "\"accounts[].id\" is required",
                        )
                    })?;
                    updates.push(account_update(pid, account, aid));
                }
            }
            apply_updates(&state, id, updates, None).await
        }
        _ => Err(validation(
            "the body must hold either \"participants\" or \"state\": \"ABORTED\" with a reason",
        )),
    }
}

async fn get_participant(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (sid, pid) = path.into_inner();
    let (sid, pid) = (parse_id(&sid, "sid")?, parse_id(&pid, "pid")?);
    participant_in(&state, sid, pid).await?;
    answer(&state, sid, &[], Some(pid)).await
}

async fn participant_in(state: &AppState, sid: i64, pid: i64) -> ApiResult<SettlementRecord> {
    let settlement = settlement_or_refusal(state, sid).await?;
    if !settlement.accounts.iter().any(|a| a.participant_id == pid) {
        return Err(validation(format!(
            "participantId: {pid} is not in settlement {sid}"
        )));
    }
    Ok(settlement)
}

#[derive(Deserialize)]
struct ParticipantUpdatePayload {
    accounts: Vec<AccountPayload>,
}

async fn update_participant(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    if let Some(answer) = forward_settlement_change(&state, &request, &bytes).await? {
        return Ok(answer);
    }
    let (sid, pid) = path.into_inner();
    let (sid, pid) = (parse_id(&sid, "sid")?, parse_id(&pid, "pid")?);
    let payload: ParticipantUpdatePayload = parse(&bytes)?;
    participant_in(&state, sid, pid).await?;
    let mut updates = Vec::new();
    for account in payload.accounts {
        let aid = account.id.ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingMandatoryElement,
                "\"accounts[].id\" is required",
            )
        })?;
        updates.push(account_update(pid, account, aid));
    }
    apply_updates(&state, sid, updates, Some(pid)).await
}

async fn get_account(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
) -> ApiResult<HttpResponse> {
    let (sid, pid, aid) = path.into_inner();
    let (sid, pid, aid) = (
        parse_id(&sid, "sid")?,
        parse_id(&pid, "pid")?,
        parse_id(&aid, "aid")?,
    );
    account_in(&state, sid, pid, aid).await?;
    answer(&state, sid, &[], Some(pid)).await
}

async fn account_in(state: &AppState, sid: i64, pid: i64, aid: i64) -> ApiResult<()> {
    let settlement = participant_in(state, sid, pid).await?;
    if !settlement
        .accounts
        .iter()
        .any(|a| a.participant_id == pid && a.account_id == aid)
    {
        return Err(validation(format!(
            "Participant and account mismatch: participant {pid} has no account {aid} in settlement {sid}"
        )));
    }
    Ok(())
}

async fn update_account(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    bytes: web::Bytes,
) -> ApiResult<HttpResponse> {
    if let Some(answer) = forward_settlement_change(&state, &request, &bytes).await? {
        return Ok(answer);
    }
    let (sid, pid, aid) = path.into_inner();
    let (sid, pid, aid) = (
        parse_id(&sid, "sid")?,
        parse_id(&pid, "pid")?,
        parse_id(&aid, "aid")?,
    );
    let account: AccountPayload = parse(&bytes)?;
    account_in(&state, sid, pid, aid).await?;
    apply_updates(
        &state,
        sid,
        vec![account_update(pid, account, aid)],
        Some(pid),
    )
    .await
}

// -- reports ---------------------------------------------------------------

#[derive(Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

const CSV_HEADER: &str = "participant,participantId,accountId,currency,netSettlementAmount,sentAmount,sentCount,receivedAmount,receivedCount";

/// Account id -> (participant, currency) for every account.
async fn account_owners(
    state: &AppState,
) -> ApiResult<BTreeMap<i64, (switch_storage::participants::ParticipantRecord, String)>> {
    let mut owners = BTreeMap::new();
    for participant in state.store.list_participants(None).await? {
        for account in &participant.accounts {
            owners.insert(account.id, (participant.clone(), account.currency.clone()));
        }
    }
    Ok(owners)
}

/// One row per participant account: what it sent and received and its net.
async fn report_rows(
    state: &AppState,
    totals: BTreeMap<i64, AccountTotals>,
) -> ApiResult<Vec<Value>> {
    let owners = account_owners(state).await?;
    let mut rows = Vec::with_capacity(totals.len());
    for (account_id, t) in totals {
        let Some((participant, currency)) = owners.get(&account_id) else {
            continue;
        };
        rows.push(json!({
            "participant": participant.name,
            "participantId": participant.id,
            "accountId": account_id,
            "currency": currency,
            "netSettlementAmount": (t.sent_amount - t.received_amount).normalize().to_string(),
            "sentAmount": t.sent_amount.normalize().to_string(),
            "sentCount": t.sent_count,
            "receivedAmount": t.received_amount.normalize().to_string(),
            "receivedCount": t.received_count,
        }));
    }
    Ok(rows)
}

/// The per-pair nets of a settlement: what a bilateral settlement moves.
async fn bilateral_rows(state: &AppState, settlement_id: i64) -> ApiResult<Vec<Value>> {
    let owners = account_owners(state).await?;
    let mut rows = Vec::new();
    for net in state.store.bilateral_nets(settlement_id).await? {
        let (Some((a, currency)), Some((b, _))) =
            (owners.get(&net.account_a), owners.get(&net.account_b))
        else {
            continue;
        };
        rows.push(json!({
            "participantA": a.name,
            "participantAId": a.id,
            "accountA": net.account_a,
            "participantB": b.name,
            "participantBId": b.id,
            "accountB": net.account_b,
            "currency": currency,
            "netAmount": net.net_amount.normalize().to_string(),
        }));
    }
    Ok(rows)
}

fn csv(rows: &[Value]) -> String {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for row in rows {
        let cells: Vec<String> = CSV_HEADER
            .split(',')
            .map(|column| match &row[column] {
                Value::String(s) => s.replace([',', '\n', '"'], " "),
                other => other.to_string(),
            })
            .collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text
}

fn report(format: Option<String>, mut body: Value, rows: Vec<Value>) -> ApiResult<HttpResponse> {
    match format.as_deref() {
        None | Some("json") => {
            body["rows"] = json!(rows);
            Ok(HttpResponse::Ok().json(body))
        }
        Some("csv") => Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .body(csv(&rows))),
        Some(other) => Err(validation(format!(
            "format {other} is not served: use json or csv"
        ))),
    }
}

async fn settlement_report(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ReportQuery>,
) -> ApiResult<HttpResponse> {
    let settlement = settlement_or_refusal(&state, parse_id(&path, "id")?).await?;
    let totals = state.store.settlement_totals(settlement.id).await?;
    let rows = report_rows(&state, totals).await?;
    let bilateral = bilateral_rows(&state, settlement.id).await?;
    let body = json!({"settlementId": settlement.id, "state": settlement.state, "bilateralNets": bilateral});
    report(query.into_inner().format, body, rows)
}

async fn window_report(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ReportQuery>,
) -> ApiResult<HttpResponse> {
    let window = window_or_refusal(&state, parse_id(&path, "id")?).await?;
    let totals = state.store.window_totals(window.id).await?;
    let rows = report_rows(&state, totals).await?;
    let body = json!({"settlementWindowId": window.id, "state": window.state});
    report(query.into_inner().format, body, rows)
}
