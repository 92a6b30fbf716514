//! Searching the release environment's logs: every instance's log as its
//! provider keeps it (the services' stderr: the gateway's and the
//! collector's JSON events, the model servers' request lines) and the
//! gateway's prediction log, filtered by service, variant, time, status,
//! request id and text. A request id the gateway gave a request is in the
//! prediction log (when it was sampled) and in the model server's line for
//! it (when the server logs the `x-request-id` it was sent, as the examples
//! do): `mlops logs --request-id ID` follows one request end to end.

use std::path::Path;

use mlops_iac::{Provider, Scope};
use serde::Serialize;

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// Where it came from: a service (`iris`, `iris-gateway`) or
    /// `iris-gateway predictions`.
    pub source: String,
    /// Its time (ms since the epoch), when it says one.
    pub ts_ms: Option<i64>,
    /// The line as written.
    pub text: String,
    /// The line as JSON, when it is.
    #[serde(skip)]
    pub json: Option<serde_json::Value>,
}

impl LogLine {
    /// A line from `source`; its time from a JSON `ts_ms` or `time`
    /// (RFC 3339) field.
    pub fn new(source: &str, text: &str) -> Self {
        let json = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .filter(serde_json::Value::is_object);
        let ts_ms = json.as_ref().and_then(|j| {
            j["ts_ms"].as_i64().or_else(|| {
                j["time"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as i64)
            })
        });
        LogLine {
            source: source.to_owned(),
            ts_ms,
            text: text.to_owned(),
            json,
        }
    }
}

/// What to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    /// Only these sources' services (a service's gateway and collector
    /// count as its own when `service` names it).
    pub services: Vec<String>,
    /// Only lines of this variant (JSON `variant`).
    pub variant: Option<String>,
    /// Only lines at or after this time; lines without a time are kept
    /// only when no time is asked for.
    pub since_ms: Option<i64>,
    /// Only this status (`503`) or class (`5xx`), from JSON `status`.
    pub status: Option<String>,
    /// Only lines naming this request id.
    pub request_id: Option<String>,
    /// Only lines containing this text.
    pub grep: Option<String>,
}

impl LogQuery {
    /// Whether `line` is kept.
    pub fn matches(&self, line: &LogLine) -> bool {
        if !self.services.is_empty()
            && !self.services.iter().any(|s| {
                line.source == *s
                    || line
                        .source
                        .strip_prefix(s.as_str())
                        .is_some_and(|rest| rest.starts_with('-') || rest.starts_with(' '))
            })
        {
            return false;
        }
        if let Some(since) = self.since_ms
            && line.ts_ms.is_none_or(|t| t < since)
        {
            return false;
        }
        let field = |name: &str| line.json.as_ref().map(|j| &j[name]);
        if let Some(v) = &self.variant
            && field("variant").and_then(|x| x.as_str()) != Some(v.as_str())
        {
            return false;
        }
        if let Some(want) = &self.status {
            let Some(status) = field("status").and_then(serde_json::Value::as_u64) else {
                return false;
            };
            let ok = match want.strip_suffix("xx") {
                Some(class) => class.parse::<u64>().is_ok_and(|c| status / 100 == c),
                None => want.parse::<u64>().is_ok_and(|w| w == status),
            };
            if !ok {
                return false;
            }
        }
        if let Some(id) = &self.request_id
            && field("request_id").and_then(|x| x.as_str()) != Some(id.as_str())
            && !line.text.contains(id.as_str())
        {
            return false;
        }
        if let Some(g) = &self.grep
            && !line.text.contains(g.as_str())
        {
            return false;
        }
        true
    }
}

/// Every line of every instance of the scope's environment (the last
/// `lines` of each, as its provider keeps them), and of the prediction log
/// in `gateway_state` (its rotated part first), oldest first where the
/// lines say their times.
pub async fn collect(
    provider: &dyn Provider,
    scope: &Scope,
    gateway_state: Option<&Path>,
    lines: usize,
) -> Result<Vec<LogLine>, mlops_iac::ProviderError> {
    let mut out = Vec::new();
    for instance in provider.observe(scope).await? {
        let text = provider.logs(scope, &instance, lines).await?;
        out.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| LogLine::new(&instance.service, l)),
        );
    }
    if let Some(dir) = gateway_state {
        let service = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for name in ["predictions.jsonl.1", "predictions.jsonl"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
                let all: Vec<&str> = text.lines().collect();
                let start = all.len().saturating_sub(lines);
                out.extend(
                    all[start..]
                        .iter()
                        .map(|l| LogLine::new(&format!("{service} predictions"), l)),
                );
            }
        }
    }
    // Lines with a time in time order; a line without one stays after the
    // line before it.
    let mut last = i64::MIN;
    let mut keyed: Vec<(i64, usize, LogLine)> = out
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            if let Some(t) = l.ts_ms {
                last = t;
            }
            (l.ts_ms.unwrap_or(last), i, l)
        })
        .collect();
    keyed.sort_by_key(|(t, i, _)| (*t, *i));
    Ok(keyed.into_iter().map(|(_, _, l)| l).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_filter_by_fields_and_text() {
        let p = LogLine::new(
            "iris-gateway predictions",
            r#"{"request_id":"abc","ts_ms":2000,"variant":"canary","status":503}"#,
        );
        let r = LogLine::new(
            "iris",
            r#"{"event":"request","request_id":"abc","status":200,"time":"1970-01-01T00:00:03Z"}"#,
        );
        let plain = LogLine::new("iris", "serve: listening");
        assert_eq!(r.ts_ms, Some(3000));
        let q = |f: fn(&mut LogQuery)| {
            let mut q = LogQuery::default();
            f(&mut q);
            q
        };
        let by_id = q(|q| q.request_id = Some("abc".into()));
        assert!(by_id.matches(&p) && by_id.matches(&r) && !by_id.matches(&plain));
        let five = q(|q| q.status = Some("5xx".into()));
        assert!(five.matches(&p) && !five.matches(&r));
        let exact = q(|q| q.status = Some("200".into()));
        assert!(exact.matches(&r) && !exact.matches(&p));
        let canary = q(|q| q.variant = Some("canary".into()));
        assert!(canary.matches(&p) && !canary.matches(&r));
        let since = q(|q| q.since_ms = Some(2500));
        assert!(since.matches(&r) && !since.matches(&p) && !since.matches(&plain));
        let svc = q(|q| q.services = vec!["iris".into()]);
        assert!(svc.matches(&p) && svc.matches(&r));
        let other = q(|q| q.services = vec!["iri".into()]);
        assert!(!other.matches(&r));
        let grep = q(|q| q.grep = Some("listening".into()));
        assert!(grep.matches(&plain) && !grep.matches(&r));
    }
}
