//! Alerts kept in the metrics database — their current states, every
//! transition, and every delivery — and their delivery to a webhook.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusqlite::params;
use serde::Serialize;

use crate::settings::Webhook;
use crate::slo::{Alert, AlertState, Evaluation};
use crate::tsdb::{Millis, Store, TsdbError};

fn sql(store: &Store, what: &'static str) -> impl FnOnce(rusqlite::Error) -> TsdbError {
    let path = store.path().to_owned();
    move |source| TsdbError::Sql { path, what, source }
}

/// An alert as the database holds it, with its last evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// The SLO.
    pub slo: String,
    /// The rule.
    pub rule: String,
    /// `page` or `ticket`.
    pub severity: String,
    /// Its state.
    pub state: AlertState,
    /// Since when.
    pub since: Millis,
    /// The last evaluation (burn rates, counts).
    pub evaluation: serde_json::Value,
}

/// A transition of an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Its id.
    pub id: i64,
    /// When.
    pub ts: Millis,
    /// The SLO.
    pub slo: String,
    /// The rule.
    pub rule: String,
    /// `page` or `ticket`.
    pub severity: String,
    /// The state entered.
    pub state: AlertState,
    /// The evaluation that caused it.
    pub evaluation: serde_json::Value,
}

/// A delivery of an alert event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    /// The event delivered.
    pub event: i64,
    /// When the delivery ended.
    pub ts: Millis,
    /// Where to (the webhook URL).
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The last status or error.
    pub detail: String,
}

/// Every alert's current state, keyed by (SLO, rule).
pub fn alerts(store: &Store) -> Result<Vec<AlertRecord>, TsdbError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT slo, rule, severity, state, since, evaluation FROM alerts ORDER BY slo, rule",
        )
        .map_err(sql(store, "read alerts"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(AlertRecord {
                slo: r.get(0)?,
                rule: r.get(1)?,
                severity: r.get(2)?,
                state: AlertState::parse(&r.get::<_, String>(3)?),
                since: r.get(4)?,
                evaluation: serde_json::from_str(&r.get::<_, String>(5)?)
                    .unwrap_or(serde_json::Value::Null),
            })
        })
        .map_err(sql(store, "read alerts"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql(store, "read alerts"))
}

/// Alert transitions since `since`, oldest first.
pub fn events(store: &Store, since: Millis) -> Result<Vec<AlertEvent>, TsdbError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT id, ts, slo, rule, severity, state, evaluation FROM alert_events
             WHERE ts >= ?1 ORDER BY id",
        )
        .map_err(sql(store, "read alert events"))?;
    let rows = stmt
        .query_map([since], |r| {
            Ok(AlertEvent {
                id: r.get(0)?,
                ts: r.get(1)?,
                slo: r.get(2)?,
                rule: r.get(3)?,
                severity: r.get(4)?,
                state: AlertState::parse(&r.get::<_, String>(5)?),
                evaluation: serde_json::from_str(&r.get::<_, String>(6)?)
                    .unwrap_or(serde_json::Value::Null),
            })
        })
        .map_err(sql(store, "read alert events"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql(store, "read alert events"))
}

/// Every delivery, oldest first.
pub fn deliveries(store: &Store) -> Result<Vec<DeliveryRecord>, TsdbError> {
    let mut stmt = store
        .conn()
        .prepare("SELECT event, ts, target, attempts, outcome, detail FROM deliveries ORDER BY id")
        .map_err(sql(store, "read deliveries"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(DeliveryRecord {
                event: r.get(0)?,
                ts: r.get(1)?,
                target: r.get(2)?,
                attempts: r.get(3)?,
                outcome: r.get(4)?,
                detail: r.get(5)?,
            })
        })
        .map_err(sql(store, "read deliveries"))?;
    rows.collect::<Result<_, _>>()
        .map_err(sql(store, "read deliveries"))
}

/// The alerts as the database left them (after a restart, an alert keeps
/// its state: a firing alert is not fired again).
pub(crate) fn load(store: &Store) -> Result<HashMap<(String, String), Alert>, TsdbError> {
    Ok(alerts(store)?
        .into_iter()
        .map(|a| {
            (
                (a.slo.clone(), a.rule.clone()),
                Alert {
                    slo: a.slo,
                    rule: a.rule,
                    state: a.state,
                    since: a.since,
                },
            )
        })
        .collect())
}

/// Keep `alert`'s state and last evaluation; with `changed` (the payload
/// of the transition), also record the transition. Returns the event's id
/// when one was recorded.
pub(crate) fn save(
    store: &Store,
    alert: &Alert,
    evaluation: &Evaluation,
    changed: Option<&serde_json::Value>,
    now: Millis,
) -> Result<Option<i64>, TsdbError> {
    let json = serde_json::to_string(evaluation).unwrap_or_else(|_| "null".into());
    let severity = evaluation.severity.as_str();
    store
        .conn()
        .execute(
            "INSERT INTO alerts (slo, rule, severity, state, since, evaluation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (slo, rule) DO UPDATE SET severity = excluded.severity,
               state = excluded.state, since = excluded.since, evaluation = excluded.evaluation",
            params![
                alert.slo,
                alert.rule,
                severity,
                alert.state.as_str(),
                alert.since,
                json
            ],
        )
        .map_err(sql(store, "record an alert"))?;
    let Some(payload) = changed else {
        return Ok(None);
    };
    store
        .conn()
        .execute(
            "INSERT INTO alert_events (ts, slo, rule, severity, state, evaluation, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now,
                alert.slo,
                alert.rule,
                severity,
                alert.state.as_str(),
                json,
                payload.to_string()
            ],
        )
        .map_err(sql(store, "record an alert event"))?;
    Ok(Some(store.conn().last_insert_rowid()))
}

/// Firing and resolved events since `since` that no delivery outcome was
/// recorded for (the collector died while delivering them), oldest first,
/// with their payloads.
pub(crate) fn undelivered(
    store: &Store,
    since: Millis,
) -> Result<Vec<(i64, serde_json::Value)>, TsdbError> {
    let mut stmt = store
        .conn()
        .prepare(
            "SELECT e.id, e.payload FROM alert_events e
             WHERE e.ts >= ?1 AND e.state IN ('firing', 'resolved') AND e.payload IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.id)
             ORDER BY e.id",
        )
        .map_err(sql(store, "read undelivered alerts"))?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(sql(store, "read undelivered alerts"))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, payload) = row.map_err(sql(store, "read undelivered alerts"))?;
        if let Ok(payload) = serde_json::from_str(&payload) {
            out.push((id, payload));
        }
    }
    Ok(out)
}

/// Record how a delivery of event `event` ended.
pub(crate) fn record_delivery(store: &Store, event: i64, d: &Delivery) -> Result<(), TsdbError> {
    store
        .conn()
        .execute(
            "INSERT INTO deliveries (event, ts, target, attempts, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                event,
                d.ts,
                d.target,
                d.attempts,
                if d.delivered { "delivered" } else { "failed" },
                d.detail
            ],
        )
        .map_err(sql(store, "record a delivery"))?;
    Ok(())
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// When it ended.
    pub ts: Millis,
    /// The URL.
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the webhook accepted it (2xx).
    pub delivered: bool,
    /// The last status or error.
    pub detail: String,
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts at most.
    pub attempts: u32,
    /// The wait before the second attempt; doubled after each.
    pub first_backoff: Duration,
    /// Each attempt's time limit.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 0.5 s then doubling (7.5 s of waits in all), 5 s each.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

/// POST `payload` as JSON to `webhook`, retrying connection failures,
/// timeouts, 408, 429 and 5xx with exponential backoff; other statuses
/// are final. The bearer token is read from the environment variable the
/// webhook names, sent, and never written anywhere (nor into `detail`).
pub async fn deliver(
    webhook: &Webhook,
    payload: &serde_json::Value,
    policy: RetryPolicy,
) -> Delivery {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let body = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
    let token = webhook
        .token_env
        .as_ref()
        .and_then(|name| std::env::var(name).ok())
        .filter(|t| !t.is_empty());
    let mut backoff = policy.first_backoff;
    let mut detail = String::new();
    let mut attempts = 0;
    while attempts < policy.attempts.max(1) {
        if attempts > 0 {
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
        attempts += 1;
        let mut request = Request::post(&webhook.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "mlops-collector");
        if let Some(t) = &token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = match request.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => {
                detail = format!("invalid request: {e}");
                break;
            }
        };
        let exchange = async {
            let response = client.request(request).await?;
            let status = response.status();
            // Read (and drop) the answer so the connection is reusable.
            let _ = response.into_body().collect().await;
            Ok::<StatusCode, hyper_util::client::legacy::Error>(status)
        };
        match tokio::time::timeout(policy.timeout, exchange).await {
            Ok(Ok(status)) if status.is_success() => {
                return Delivery {
                    ts: crate::tsdb::now_ms(),
                    target: webhook.redacted(),
                    attempts,
                    delivered: true,
                    detail: format!("HTTP {}", status.as_u16()),
                };
            }
            Ok(Ok(status)) => {
                detail = format!("HTTP {}", status.as_u16());
                let retry = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                if !retry {
                    break;
                }
            }
            Ok(Err(e)) => detail = format!("cannot connect: {}", error_chain(&e)),
            Err(_) => detail = format!("no answer within {:?}", policy.timeout),
        }
    }
    Delivery {
        ts: crate::tsdb::now_ms(),
        target: webhook.redacted(),
        attempts,
        delivered: false,
        detail,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
