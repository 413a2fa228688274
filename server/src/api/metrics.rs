//! `GET /metrics`: this node's numbers in the Prometheus (OpenMetrics) text format, read when scraped from
//! the hub and the writer rather than kept twice. Meant for the operator's Prometheus: the reverse proxy in
//! front should not route it to the public.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::writer::Stats;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut registry = Registry::with_prefix("multichat");
    registry.register_collector(Box::new(Node {
        hub: state.hub.clone(),
        writer: state.writer.stats_handle(),
        cluster: state.cluster.clone(),
    }));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => {
            ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
        }
        Err(err) => {
            tracing::error!(cause = %err, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

struct Node {
    hub: Arc<Hub>,
    writer: Arc<Stats>,
    cluster: Cluster,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Node")
    }
}

impl Collector for Node {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let gauge = |value: usize| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        let counters = self.hub.counters();
        let gauges = [
            ("connections", "Open chat sockets on this node", gauge(self.hub.connections())),
            ("rooms", "Rooms with at least one member on this node", gauge(self.hub.rooms_in_use())),
        ];
        for (name, help, metric) in gauges {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        if self.cluster.is_linked() {
            let metric = gauge(usize::from(self.cluster.is_whole()));
            let help = "1 while this node is connected to Redis, 0 while it serves its users alone";
            metric.encode(encoder.encode_descriptor("redis_connected", help, None, metric.metric_type())?)?;
        }
        let counters = [
            ("messages_received", "Messages sent by this node's clients", self.writer.messages.load(Ordering::Relaxed)),
            (
                "messages_delivered",
                "Messages queued to this node's sockets (one per recipient)",
                counters.messages_delivered.load(Ordering::Relaxed),
            ),
            (
                "slow_clients_dropped",
                "Sockets closed for reading too slowly",
                counters.slow_readers_dropped.load(Ordering::Relaxed),
            ),
            (
                "relay_dropped",
                "Changes not relayed to the other nodes because the way to Redis was jammed (they catch up from the database)",
                counters.relay_dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}
