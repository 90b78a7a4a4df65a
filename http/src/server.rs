//! Starting, running and stopping a switch node.
//!
//! Threads: the storage runtime (Tokio, owns every database and Redis
//! connection), the actix system (main thread), actor shards (one arbiter per
//! core) and the HTTP workers of each listener.
//!
//! Shutdown on SIGTERM or SIGINT: both listeners stop accepting, in-flight
//! requests finish (each waits for its actor's durable answer) within
//! `shutdown_timeout_ms`, then the actor shards stop and the pool closes.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServiceResponse;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpResponse, HttpServer};
use switch_actors::{ErrorCode, FspiopError};
use switch_cluster::Shards;
use switch_config::Config;
use switch_storage::{PoolSettings, Store};

use switch_actors::bulk::{bulk_directory, BulkDirectory, BulkServices};
use switch_actors::participants::ParticipantCache;
use switch_actors::position::PositionLimits;
use switch_actors::position::Positions;
use switch_actors::settlement::{
    settlement_directory, CloseWindow, SettlementDirectory, SettlementKey,
};
use switch_actors::transfer::rules::TransferSettings;
use switch_actors::transfer::{
    system_clock_ms, transfer_directory, Expire, Lines, TransferServices,
};
use switch_cluster::coordinator::{self, EpochFuture, NodeSettings, SlotHooks};
use switch_cluster::placement::{bulk_slot, transfer_slot, Placement, Route, SETTLEMENT_SLOT};
use switch_cluster::timers::{LocalTimers, Rearm, RedisTimers, Timers};
use switch_cluster::Directory;
use switch_storage::loader::{LoaderLimits, TransferLoader};
use switch_storage::writer::{BatchWriter, WriterLimits};

use crate::endpoints::EndpointCache;
use crate::errors::{error_body, status_of};
use crate::fspiop::schema::Schemas;
use crate::metrics::{self, Metrics};
use crate::notifier::{CallbackLimits, HttpNotifier};
use crate::state::{AppState, RedisProbe};

/// Errors that stop a node from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] switch_storage::StorageError),
    #[error("redis at {url}: {reason}")]
    Redis { url: String, reason: String },
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error("FSPIOP schemas: {0}")]
    Schemas(String),
    #[error("recovery: {0}")]
    Recovery(String),
}

/// The runtime that owns all connections to the database and Redis.
///
/// Its threads run `priority` nice levels above the rest of the process
/// (see [`raise_thread_priority`]); threads they start, such as SQLite's
/// connection workers, inherit that.
pub fn storage_runtime(threads: usize, priority: u32) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("storage")
        .on_thread_start(move || raise_thread_priority(priority))
        .enable_all()
        .build()
}

/// Lowers the calling thread's nice value by `levels` (Linux keeps a nice
/// value per thread, and new threads inherit their creator's).
///
/// The batch writer is the one serial step of every transfer: while it
/// waits for a core behind HTTP work, every position's next batch waits
/// too. On a machine with its cores nearly busy the storage threads
/// therefore go first. Without CAP_SYS_NICE the kernel refuses; that is
/// logged once and the thread runs at normal priority.
#[cfg(target_os = "linux")]
fn raise_thread_priority(levels: u32) {
    static REFUSAL_LOGGED: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    if levels == 0 {
        return;
    }
    let nice = -(levels.min(20) as libc::c_int);
    // SAFETY: gettid and setpriority take plain integers and touch no
    // memory of ours; PRIO_PROCESS with a thread id names that one thread.
    let refused = unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, nice) != 0
    };
    if refused && !REFUSAL_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, nice, "storage threads run at normal priority: raising it needs CAP_SYS_NICE (storage_thread_priority = 0 turns this off)");
    }
}

/// Elsewhere nice values are per process (or not there): the storage
/// threads run at normal priority.
#[cfg(not(target_os = "linux"))]
fn raise_thread_priority(_levels: u32) {}

/// Connects to the database (and migrates it) on `runtime`.
pub fn open_store(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    migrate: bool,
) -> Result<Store, StartError> {
    let settings = PoolSettings {
        connections_max: config.db_connections_max,
        acquire_timeout_ms: 5_000,
    };
    let url = config.database_url.clone();
    // Connected from a storage thread, not the caller's: SQLite's worker
    // threads are started by the connecting thread and inherit its priority.
    let connect = runtime.spawn(async move {
        let store = Store::connect(&url, &settings).await?;
        if migrate {
            store.migrate().await?;
        }
        Ok(store)
    });
    runtime
        .block_on(connect)
        .map_err(|_| StartError::Database(switch_storage::StorageError::RuntimeGone))?
}

/// Runs a node until SIGTERM or SIGINT.
pub fn serve(config: Config) -> Result<(), StartError> {
    let runtime = storage_runtime(config.storage_threads, config.storage_thread_priority)?;
    let store = open_store(&config, &runtime, true)?;
    runtime.block_on(store.ensure_hub(&config.hub_name))?;
    let redis = match config.redis_url.as_str() {
        "" => None,
        url => {
            let probe =
                RedisProbe::new(url, runtime.handle().clone()).map_err(|e| StartError::Redis {
                    url: switch_config::redact_url(url),
                    reason: e.to_string(),
                })?;
            runtime
                .block_on(probe.ping())
                .map_err(|reason| StartError::Redis {
                    url: switch_config::redact_url(url),
                    reason,
                })?;
            Some(probe)
        }
    };
    let coordination = match &redis {
        Some(_) => Some(runtime.block_on(connect_cluster(&config))?),
        None => None,
    };
    let system = actix_web::rt::System::new();
    let result = system.block_on(run(
        config,
        store.clone(),
        redis,
        coordination,
        runtime.handle().clone(),
    ));
    runtime.block_on(store.close());
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// This node's Redis connection for the heartbeat, and who it is.
struct Coordination {
    conn: redis::aio::ConnectionManager,
    settings: NodeSettings,
}

async fn connect_cluster(config: &Config) -> Result<Coordination, StartError> {
    let heartbeat = Duration::from_millis(config.heartbeat_interval_ms);
    let conn = coordinator::connect(&config.redis_url, heartbeat.max(Duration::from_secs(1)))
        .await
        .map_err(|e| StartError::Redis {
            url: switch_config::redact_url(&config.redis_url),
            reason: e.to_string(),
        })?;
    let node = match config.node_id.as_str() {
        "" => format!(
            "node-{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        named => named.to_string(),
    };
    let settings = NodeSettings {
        namespace: config.cluster_name.clone(),
        node,
        address: format!(
            "{}:{}",
            config.cluster_advertise_address, config.cluster_port
        ),
        heartbeat,
        ttl: Duration::from_millis(config.node_ttl_ms),
    };
    Ok(Coordination { conn, settings })
}

/// Which actors' timers to re-arm.
#[derive(Debug, Clone, Copy)]
enum Armed {
    Transfers,
    Bulks,
}

/// Arms the timer of every unfinished transfer (or bulk) of `slots`, from
/// the database (in the background).
fn rearm_from_database(store: Store, timers: Arc<dyn Timers>, slots: Vec<u32>, armed: Armed) {
    let slots: std::collections::BTreeSet<u32> = slots.into_iter().collect();
    let slot_of: fn(&str) -> u32 = match armed {
        Armed::Transfers => transfer_slot,
        Armed::Bulks => bulk_slot,
    };
    tokio::spawn(async move {
        let unfinished = match armed {
            Armed::Transfers => store.unfinished_transfers().await,
            Armed::Bulks => store.unfinished_bulks().await,
        };
        match unfinished {
            Ok(unfinished) => {
                for (id, expiration_ms) in unfinished {
                    if slots.contains(&slot_of(&id)) {
                        timers.schedule(&id, expiration_ms);
                    }
                }
            }
            Err(error) => {
                tracing::error!(?slots, ?armed, %error, "cannot re-arm the slots' expiry timers")
            }
        }
    });
}

/// What the heartbeat does to this node's actors when slots come and go.
struct SlotEvents {
    store: Store,
    participants: ParticipantCache,
    endpoints: EndpointCache,
    oracles: crate::oracle::Oracles,
    positions: Arc<Positions>,
    transfers: Arc<switch_actors::transfer::TransferDirectory>,
    timers: Arc<dyn Timers>,
    bulks: Arc<BulkDirectory>,
    bulk_timers: Arc<dyn Timers>,
}

impl SlotHooks for SlotEvents {
    fn current_epoch(&self, slot: u32) -> EpochFuture<i64> {
        let store = self.store.clone();
        Box::pin(async move { store.slot_epoch(slot).await.map_err(|e| e.to_string()) })
    }

    fn raise_epoch(&self, slot: u32, node: &str, expected: i64) -> EpochFuture<Option<i64>> {
        let store = self.store.clone();
        let node = node.to_string();
        Box::pin(async move {
            store
                .raise_slot_epoch(slot, &node, expected)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn acquired(&self, slots: &[u32]) {
        // The slots' unfinished transfers get their expiry timers here,
        // whoever armed them before (a dead node, or a Redis that restarted):
        // one read for all the slots a heartbeat took.
        let store = self.store.clone();
        rearm_from_database(
            store.clone(),
            self.timers.clone(),
            slots.to_vec(),
            Armed::Transfers,
        );
        rearm_from_database(
            store,
            self.bulk_timers.clone(),
            slots.to_vec(),
            Armed::Bulks,
        );
    }

    fn reference_changed(&self) {
        self.participants.clear();
        self.participants.models_changed();
        self.endpoints.clear();
        self.oracles.changed();
    }

    fn lost(&self, slot: u32) {
        self.positions.forget_slot(slot);
        self.transfers
            .forget_where(|id: &String| transfer_slot(id) == slot);
        self.bulks.forget_where(|id: &String| bulk_slot(id) == slot);
    }
}

async fn run(
    config: Config,
    store: Store,
    redis: Option<RedisProbe>,
    coordination: Option<Coordination>,
    io: tokio::runtime::Handle,
) -> Result<(), StartError> {
    let placement = Arc::new(match &coordination {
        Some(c) => Placement::cluster(&c.settings.node),
        None => Placement::embedded(),
    });
    let peers = coordination.as_ref().map(|c| {
        crate::cluster::Peers::new(
            &c.settings.node,
            io.clone(),
            config.forward_in_flight_max,
            config.position_batch_max,
        )
    });
    let schemas = Arc::new(Schemas::load().map_err(StartError::Schemas)?);
    let shards = Arc::new(Shards::start(config.actor_threads));
    let writer = BatchWriter::start(
        &store,
        WriterLimits {
            batch_writes_max: config.batch_writes_max,
            queue_capacity: config.writer_queue_capacity,
            interval_min: std::time::Duration::from_micros(config.batch_interval_min_us),
        },
    );
    // A lookup batch is as large as a write batch: both grow with the same load.
    let loader = TransferLoader::start(
        &store,
        LoaderLimits {
            batch_ids_max: config.batch_writes_max,
            queue_capacity: config.writer_queue_capacity,
        },
    );
    let local_positions = switch_actors::position::position_directory(
        shards.clone(),
        store.clone(),
        writer.clone(),
        config.hub_name.clone(),
        PositionLimits {
            mailbox_capacity: config.position_mailbox_capacity,
            pending_max: config.position_pending_max,
        },
        placement.clone(),
    );
    let remote_positions = peers
        .clone()
        .map(|p| Arc::new(p) as Arc<dyn switch_actors::position::RemotePositions>);
    let positions = Arc::new(Positions::new(
        local_positions,
        placement.clone(),
        remote_positions,
    ));
    let metrics = Metrics::new();
    let endpoints = EndpointCache::new(store.clone());
    let notifier = HttpNotifier::start(
        &io,
        endpoints.clone(),
        config.hub_name.clone(),
        CallbackLimits {
            timeout_ms: config.callback_timeout_ms,
            retries_max: config.callback_retries_max,
            concurrency_max: config.callback_concurrency_max,
            queue_capacity: config.callback_queue_capacity,
        },
        metrics.clone(),
    );
    let participants = ParticipantCache::new(store.clone());
    let oracles = crate::oracle::Oracles::new(store.clone(), io.clone());
    let transfers_live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Cluster mode: expiry timers in Redis, claimed by each slot's owner.
    let redis_timers = coordination
        .as_ref()
        .map(|c| RedisTimers::new(&c.settings.namespace, placement.clone()));
    let timers: Arc<dyn Timers> = match &redis_timers {
        Some(redis_timers) => redis_timers.clone(),
        None => Arc::new(LocalTimers::default()),
    };
    let tick = Duration::from_millis(config.expiry_tick_ms);
    let services = Arc::new(TransferServices {
        store: store.clone(),
        writer,
        loader,
        positions: positions.clone(),
        placement: placement.clone(),
        participants: participants.clone(),
        notifier: Arc::new(notifier.clone()),
        timers: timers.clone(),
        settings: TransferSettings {
            on_us_enabled: config.on_us_transfers_enabled,
            confirm_to_payee: config.send_transfer_confirmation_to_payee,
        },
        position_timeout: Duration::from_millis(config.actor_reply_timeout_ms),
        clock: system_clock_ms,
        live: transfers_live.clone(),
    });
    let transfers = Arc::new(transfer_directory(
        shards.clone(),
        services,
        config.transfer_mailbox_capacity,
    ));
    let lines = Arc::new(Lines::new(
        transfers.clone(),
        placement.clone(),
        peers
            .clone()
            .map(|p| Arc::new(p) as Arc<dyn switch_actors::transfer::RemoteLines>),
    ));
    // A bulk's own expiry timer stays in its owner's memory (re-armed from
    // the database when a node takes the bulk's slot): bulks are few.
    let bulk_timers: Arc<dyn Timers> = Arc::new(LocalTimers::default());
    let bulks = Arc::new(bulk_directory(
        shards.clone(),
        Arc::new(BulkServices {
            store: store.clone(),
            lines: lines.clone(),
            notifier: Arc::new(notifier.clone()),
            timers: bulk_timers.clone(),
            reply_timeout: Duration::from_millis(config.actor_reply_timeout_ms),
            clock: system_clock_ms,
        }),
        config.transfer_mailbox_capacity,
    ));
    if let (Some(coordination), Some(redis_timers)) = (coordination, redis_timers.clone()) {
        // Timers are re-armed from the database per slot as the heartbeat
        // acquires slots, and after changes were dropped while Redis was away.
        let rearm: Rearm = {
            let (store, timers) = (store.clone(), timers.clone());
            Arc::new(move |slots| {
                rearm_from_database(store.clone(), timers.clone(), slots, Armed::Transfers)
            })
        };
        io.spawn(redis_timers.run(coordination.conn.clone(), tick, rearm));
        let events = Arc::new(SlotEvents {
            store: store.clone(),
            participants: participants.clone(),
            endpoints: endpoints.clone(),
            oracles: oracles.clone(),
            positions: positions.clone(),
            transfers: transfers.clone(),
            timers: timers.clone(),
            bulks: bulks.clone(),
            bulk_timers: bulk_timers.clone(),
        });
        io.spawn(coordinator::run(
            coordination.conn,
            coordination.settings,
            placement.clone(),
            events,
        ));
    } else {
        for (id, expiration_ms) in store.unfinished_transfers().await? {
            timers.schedule(&id, expiration_ms);
        }
        for (id, expiration_ms) in store.unfinished_bulks().await? {
            bulk_timers.schedule(&id, expiration_ms);
        }
    }
    actix_web::rt::spawn(fire_expired(
        timers,
        transfers.clone(),
        tick,
        Some((placement.clone(), transfer_slot)),
    ));
    actix_web::rt::spawn(fire_expired(
        bulk_timers,
        bulks.clone(),
        tick,
        Some((placement.clone(), bulk_slot)),
    ));
    if placement.is_cluster() {
        actix_web::rt::spawn(finish_gross_settlements_when_placed(
            store.clone(),
            positions.clone(),
            placement.clone(),
            config.actor_reply_timeout_ms,
        ));
    } else {
        finish_gross_settlements(&store, &positions, config.actor_reply_timeout_ms).await?;
    }
    let settlements = Arc::new(settlement_directory(
        shards.clone(),
        store.clone(),
        positions.clone(),
        Duration::from_millis(config.actor_reply_timeout_ms),
    ));
    if config.settlement_window_close_interval_s > 0 {
        let every = Duration::from_secs(config.settlement_window_close_interval_s);
        actix_web::rt::spawn(close_windows_on_schedule(
            store.clone(),
            settlements.clone(),
            placement.clone(),
            every,
        ));
    }
    let notifier_for_shutdown = notifier.clone();
    let state = web::Data::new(AppState {
        config: config.clone(),
        store,
        positions,
        placement: placement.clone(),
        peers: peers.clone(),
        transfers,
        bulks,
        lines,
        redis_timers,
        settlements,
        overload: crate::overload::Overload::new(
            transfers_live,
            config.transfers_in_flight_max,
            config.overload_prepare_wait_ms,
        ),
        participants,
        endpoints,
        notifier,
        schemas,
        oracles,
        redis,
        metrics,
        started_at: chrono::Utc::now(),
    });
    let operator = listener(
        &config,
        config.operator_port,
        state.clone(),
        "operator",
        crate::operator::routes,
    )?;
    let fspiop = listener(
        &config,
        config.fspiop_port,
        state.clone(),
        "fspiop",
        crate::fspiop::routes,
    )?;
    tracing::info!(
        fspiop_port = config.fspiop_port,
        operator_port = config.operator_port,
        database = %switch_config::redact_url(&config.database_url),
        "mojaswitch listening"
    );
    // The node-to-node channel (cluster mode only).
    let internal = match peers {
        Some(_) => Some(listener(
            &config,
            config.cluster_port,
            state.clone(),
            "cluster",
            crate::cluster::routes,
        )?),
        None => None,
    };
    let internal_handle = internal.as_ref().map(|server| server.handle());
    if let Some(internal) = internal {
        tracing::info!(cluster_port = config.cluster_port, node = %placement.node(), "node-to-node channel listening");
        actix_web::rt::spawn(internal);
    }
    let (operator_handle, fspiop_handle) = (operator.handle(), fspiop.handle());
    let servers =
        actix_web::rt::spawn(async move { futures::future::join(operator, fspiop).await });
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    futures::future::join(operator_handle.stop(true), fspiop_handle.stop(true)).await;
    if let Some(handle) = internal_handle {
        handle.stop(true).await;
    }
    let _ = servers.await;
    let undelivered = notifier_for_shutdown
        .drain(Duration::from_millis(config.shutdown_timeout_ms))
        .await;
    if undelivered > 0 {
        tracing::warn!(undelivered, "shutting down with callbacks not delivered");
    }
    shards.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Expired transfers fired per tick at most; the rest wait for the next tick.
const EXPIRIES_PER_TICK_MAX: usize = 10_000;

/// Who owns an actor's timer: the placement and the actors' slot function.
type OwnedBy = (Arc<Placement>, fn(&str) -> u32);

/// Asks each transfer (or bulk) whose timer is due to check its expiry.
///
/// With an `owner` (the placement and the actors' slot function), a timer
/// whose slot this node no longer owns is dropped: the slot's new owner
/// armed it again from the database.
async fn fire_expired<A>(
    timers: Arc<dyn Timers>,
    actors: Arc<Directory<String, A>>,
    tick: Duration,
    owner: Option<OwnedBy>,
) where
    A: actix::Actor<Context = actix::Context<A>> + actix::Handler<Expire> + Send,
{
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        let now = system_clock_ms();
        for id in timers.take_due(now, EXPIRIES_PER_TICK_MAX) {
            let owned = owner.as_ref().is_none_or(|(placement, slot_of)| {
                matches!(placement.route(slot_of(&id)), Route::Local { .. })
            });
            if !owned {
                continue;
            }
            let addr = actors.get(&id);
            let timers = timers.clone();
            let retry_at = now + tick.as_millis() as i64;
            actix_web::rt::spawn(async move {
                // Not delivered (mailbox full, or the actor was stopping):
                // try again on a later tick. The actor re-arms on failures.
                if addr.send(Expire).await.is_err() {
                    timers.schedule(&id, retry_at);
                }
            });
        }
    }
}

async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn listener(
    config: &Config,
    port: u16,
    state: web::Data<AppState>,
    api: &'static str,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<actix_web::dev::Server> {
    let body_limit = config.body_size_max_bytes;
    let server = HttpServer::new(move || {
        let metrics = state.metrics.clone();
        App::new()
            .app_data(state.clone())
            .app_data(web::PayloadConfig::new(body_limit))
            .wrap(error_bodies())
            .wrap(from_fn(move |req, next| {
                metrics::record(api, metrics.clone(), req, next)
            }))
            .configure(routes)
            .default_service(web::to(crate::operator::unknown_path))
    })
    .workers(config.http_workers)
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout_ms.div_ceil(1000))
    .bind((config.bind_address.as_str(), port))?
    .run();
    Ok(server)
}

/// Gives actix's own bodiless errors (wrong method, body too large, bad
/// query) the FSPIOP `errorInformation` shape.
fn error_bodies<B: 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new()
        .handler(StatusCode::METHOD_NOT_ALLOWED, |res| {
            as_fspiop(
                res,
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            )
        })
        .handler(StatusCode::PAYLOAD_TOO_LARGE, |res| {
            as_fspiop(
                res,
                ErrorCode::TooLargePayload,
                "request body exceeds the size limit",
            )
        })
        .handler(StatusCode::BAD_REQUEST, |res| {
            as_fspiop(
                res,
                ErrorCode::MalformedSyntax,
                "the request could not be parsed",
            )
        })
        .handler(StatusCode::NOT_FOUND, |res| {
            as_fspiop(
                res,
                ErrorCode::UnknownUri,
                "the requested path does not exist",
            )
        })
}

fn as_fspiop<B>(
    res: ServiceResponse<B>,
    code: ErrorCode,
    detail: &str,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let error = FspiopError::new(code, detail);
    let (request, _) = res.into_parts();
    let response = HttpResponse::build(status_of(code)).json(error_body(&error));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, response).map_into_right_body(),
    ))
}

/// Closes the open settlement window every `every` (the
/// `settlement_window_close_interval_s` schedule).
///
/// In cluster mode only the owner of `SETTLEMENT_SLOT` closes, so one close
/// happens per interval however many nodes run.
async fn close_windows_on_schedule(
    store: Store,
    settlements: Arc<SettlementDirectory>,
    placement: Arc<Placement>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if !matches!(placement.route(SETTLEMENT_SLOT), Route::Local { .. }) {
            continue;
        }
        let id = match store.open_window().await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(%error, "scheduled window close: cannot read the open window");
                continue;
            }
        };
        let close = CloseWindow {
            id,
            reason: "scheduled close".into(),
        };
        let addr = settlements.get(&SettlementKey);
        match switch_cluster::ask(&addr, close, every).await {
            Ok(Ok(next)) => tracing::info!(
                closed = id,
                opened = next,
                "settlement window closed on schedule"
            ),
            Ok(Err(error)) => tracing::warn!(%error, window = id, "scheduled window close refused"),
            Err(error) => {
                tracing::error!(?error, window = id, "scheduled window close did not finish")
            }
        }
    }
}

/// Writes the payer's side of gross settlements that a stop interrupted
/// between the payee's commit and the payer's batch. Runs before the
/// listeners open, so no live commit can race it.
/// Cluster mode: [`finish_gross_settlements`] once every slot has an owner,
/// retried every few seconds until it succeeds. (Any node may run it: each
/// payer's side is one idempotent command to the payer's position.)
async fn finish_gross_settlements_when_placed(
    store: Store,
    positions: Arc<Positions>,
    placement: Arc<Placement>,
    timeout_ms: u64,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if placement.unowned() > 0 {
            continue;
        }
        match finish_gross_settlements(&store, &positions, timeout_ms).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "gross settlements not finished yet; retrying"),
        }
    }
}

async fn finish_gross_settlements(
    store: &Store,
    positions: &Arc<Positions>,
    timeout_ms: u64,
) -> Result<(), StartError> {
    use switch_actors::position::rules::PositionCommand;
    use switch_actors::position::{PositionKey, PositionRequest};
    for unsettled in store.unsettled_gross().await? {
        let key = PositionKey {
            participant: unsettled.payer_fsp.clone(),
            currency: unsettled.currency.clone(),
        };
        let settle = PositionCommand::GrossSettlePayer {
            transfer_id: unsettled.transfer_id.clone(),
            amount: unsettled.amount,
        };
        match positions
            .ask(
                &key,
                PositionRequest::new(settle),
                Duration::from_millis(timeout_ms),
            )
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!(transfer_id = %unsettled.transfer_id, "finished the payer's side of a gross settlement")
            }
            other => {
                return Err(StartError::Recovery(format!(
                    "cannot finish the gross settlement of {}: {other:?}",
                    unsettled.transfer_id
                )))
            }
        }
    }
    Ok(())
}
