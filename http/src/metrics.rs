//! Prometheus metrics: request count and latency per API, method, route
//! pattern and status. Labels come from closed sets (route patterns, never
//! ids), so the series count is bounded.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    callbacks: IntCounterVec,
    callback_latency: HistogramVec,
    /// Read when scraped (`set_load`).
    prepares_waiting: IntGauge,
    transfers_in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("mojaswitch_http_requests_total", "HTTP requests answered"),
            &["api", "method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "mojaswitch_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["api", "method", "route"],
        )
        .expect("valid metric");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "mojaswitch_callbacks_total",
                "Callbacks to participants by outcome",
            ),
            &["endpoint_type", "outcome"],
        )
        .expect("valid metric");
        let callback_latency = HistogramVec::new(
            HistogramOpts::new(
                "mojaswitch_callback_duration_seconds",
                "Callback delivery time, retries included",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["endpoint_type", "outcome"],
        )
        .expect("valid metric");
        for metric in [&requests, &callbacks] {
            registry
                .register(Box::new(metric.clone()))
                .expect("register");
        }
        for metric in [&latency, &callback_latency] {
            registry
                .register(Box::new(metric.clone()))
                .expect("register");
        }
        let prepares_waiting = IntGauge::new(
            "mojaswitch_prepares_waiting",
            "Prepares being answered (see overload_prepare_wait_ms)",
        )
        .expect("valid metric");
        let transfers_in_flight = IntGauge::new(
            "mojaswitch_transfers_in_flight",
            "Live transfer actors (see transfers_in_flight_max)",
        )
        .expect("valid metric");
        for metric in [&prepares_waiting, &transfers_in_flight] {
            registry
                .register(Box::new(metric.clone()))
                .expect("register");
        }
        Metrics {
            registry,
            requests,
            latency,
            callbacks,
            callback_latency,
            prepares_waiting,
            transfers_in_flight,
        }
    }

    /// The load the edge sees now, set just before a scrape.
    pub fn set_load(&self, prepares_waiting: usize, transfers_in_flight: usize) {
        self.prepares_waiting.set(prepares_waiting as i64);
        self.transfers_in_flight.set(transfers_in_flight as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// One callback's outcome (`delivered`, `failed` or `dropped`).
    pub fn callback(&self, endpoint_type: &str, outcome: &str, seconds: f64) {
        self.callbacks
            .with_label_values(&[endpoint_type, outcome])
            .inc();
        self.callback_latency
            .with_label_values(&[endpoint_type, outcome])
            .observe(seconds);
    }

    fn observe(
        &self,
        api: &str,
        method: &str,
        route: &str,
        status: actix_web::http::StatusCode,
        seconds: f64,
    ) {
        self.requests
            .with_label_values(&[api, method, route, status.as_str()])
            .inc();
        self.latency
            .with_label_values(&[api, method, route])
            .observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Middleware body: times the request and records it under its route pattern.
pub async fn record(
    api: &'static str,
    metrics: Metrics,
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let response = next.call(request).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    metrics.observe(
        api,
        response.request().method().as_str(),
        &route,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    Ok(response)
}
