//! The settings of stage 5, `[apm]` beside `[apm.steps.*]`: how the
//! release environment is monitored, its SLOs and where alerts go.
//!
//! ```toml
//! [apm]
//! period = "30d"            # the SLO period; alert windows scale with it
//! scrape-interval = "1s"    # how often the collector scrapes
//! min-requests = 20         # fewer requests in a long window never alert
//! webhook = "http://127.0.0.1:9093/hook"   # alerts are POSTed here (JSON)
//! webhook-token-env = "ALERT_TOKEN"        # sent as a bearer token
//!
//! [apm.slo.availability]
//! objective = "availability" # requests answered without a 5xx
//! target = 0.999
//!
//! [apm.slo.latency]
//! objective = "latency"      # requests answered within `threshold`
//! threshold = "250ms"
//! target = 0.99
//! ```
//!
//! Every key is optional: without `[apm]` the collector still collects,
//! with the defaults and no SLO.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mlops_core::manifest::{Diagnostic, parse_duration};
use mlops_core::{CompiledSection, KindParams, ManifestSection, Stage};
use serde::{Deserialize, Serialize};

/// The default SLO period: 30 days, the SRE workbook's.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30 * 86_400);
/// The default scrape interval.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The default minimum of requests in an alert's long window.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

/// What an SLO counts as a good request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "objective", rename_all = "kebab-case")]
pub enum Objective {
    /// Answered without a server error (any status but 5xx).
    Availability,
    /// Answered (whatever the status) within `threshold`.
    Latency {
        /// The latency a good request stays within.
        #[serde(with = "millis")]
        threshold: Duration,
    },
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(serde::de::Error::custom(
                "a threshold must be a positive number of ms",
            ));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

/// One service level objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Its name (`[apm.slo.NAME]`).
    pub name: String,
    /// What a good request is.
    #[serde(flatten)]
    pub objective: Objective,
    /// The share of good requests promised, in `(0, 1)`.
    pub target: f64,
    /// Only this variant's requests (`stable`, `canary`…), else all.
    pub variant: Option<String>,
}

impl Slo {
    /// The error budget: the share of requests allowed to be bad.
    pub fn budget(&self) -> f64 {
        1.0 - self.target
    }
}

/// Where alerts are delivered besides the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// The URL alerts are POSTed to (JSON).
    pub url: String,
    /// The environment variable holding a bearer token, read by the
    /// collector when it delivers (the token is never written anywhere).
    pub token_env: Option<String>,
}

impl Webhook {
    /// The URL as logs, the database and reports show it: a query string
    /// (which may carry a key) is replaced by `?…`.
    pub fn redacted(&self) -> String {
        match self.url.split_once('?') {
            Some((base, _)) => format!("{base}?…"),
            None => self.url.clone(),
        }
    }
}

/// Why `url` cannot be a webhook, if it cannot: the collector speaks plain
/// HTTP (TLS would be a second HTTP stack for one POST; a local relay
/// forwards to an https endpoint), and a credential belongs in
/// `webhook-token-env`, not in the URL where logs would show it.
fn webhook_problem(url: &str) -> Option<String> {
    if url.starts_with("https://") {
        return Some(format!(
            "`webhook` `{}` is https: the collector delivers over plain http only; point it at a relay on loopback that forwards to the https endpoint",
            Webhook {
                url: url.to_owned(),
                token_env: None
            }
            .redacted()
        ));
    }
    let uri: hyper::Uri = match url.parse() {
        Ok(u) if url.starts_with("http://") && !url.contains(char::is_whitespace) => u,
        _ => {
            return Some(format!(
                "`webhook` must be an http:// URL, not `{}`",
                Webhook {
                    url: url.to_owned(),
                    token_env: None
                }
                .redacted()
            ));
        }
    };
    let Some(authority) = uri.authority() else {
        return Some("`webhook` has no host".to_owned());
    };
    if authority.as_str().contains('@') {
        return Some(
            "`webhook` must not hold a user or password: put the token in an environment variable and name it in `webhook-token-env`"
                .to_owned(),
        );
    }
    None
}

/// `[apm]`, compiled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApmSettings {
    /// The SLO period; the alert windows scale with it.
    pub period: Duration,
    /// How often the collector scrapes.
    pub scrape_interval: Duration,
    /// Fewer requests than this in an alert's long window never alert.
    pub min_requests: u64,
    /// How long an alert's condition must hold before it fires (pending
    /// until then); by default one minute scaled by the period.
    pub hold: Duration,
    /// The SLOs, by name.
    pub slos: BTreeMap<String, Slo>,
    /// Where alerts are POSTed.
    pub webhook: Option<Webhook>,
}

impl ApmSettings {
    /// The latency SLOs' thresholds in microseconds, sorted: the bucket
    /// bounds the gateway must expose besides its defaults.
    pub fn latency_thresholds_us(&self) -> Vec<u64> {
        let mut us: Vec<u64> = self
            .slos
            .values()
            .filter_map(|s| match s.objective {
                Objective::Latency { threshold } => {
                    Some(u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX))
                }
                Objective::Availability => None,
            })
            .collect();
        us.sort_unstable();
        us.dedup();
        us
    }

    /// Every latency bucket bound the gateway exposes once the SLOs'
    /// thresholds are added, in seconds, ascending.
    pub fn gateway_latency_bounds(&self) -> Vec<f64> {
        let mut b: Vec<f64> = mlops_release::gateway::metrics::LATENCY_BUCKETS_SECONDS.to_vec();
        b.extend(
            self.latency_thresholds_us()
                .iter()
                .map(|&us| us as f64 / 1e6),
        );
        b.sort_by(f64::total_cmp);
        b.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        b
    }
}

impl Default for ApmSettings {
    fn default() -> Self {
        ApmSettings {
            period: DEFAULT_PERIOD,
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            min_requests: DEFAULT_MIN_REQUESTS,
            hold: scaled(Duration::from_secs(60), DEFAULT_PERIOD),
            slos: BTreeMap::new(),
            webhook: None,
        }
    }
}

/// `base` (a duration for a 30-day period) scaled to `period`.
pub fn scaled(base: Duration, period: Duration) -> Duration {
    base.mul_f64(period.as_secs_f64() / DEFAULT_PERIOD.as_secs_f64())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ApmWire {
    period: Option<toml::Spanned<String>>,
    scrape_interval: Option<toml::Spanned<String>>,
    min_requests: Option<u64>,
    #[serde(rename = "for")]
    hold: Option<toml::Spanned<String>>,
    webhook: Option<toml::Spanned<String>>,
    webhook_token_env: Option<toml::Spanned<String>>,
    #[serde(default)]
    slo: BTreeMap<String, toml::Spanned<SloWire>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SloWire {
    objective: toml::Spanned<String>,
    target: toml::Spanned<f64>,
    threshold: Option<toml::Spanned<String>>,
    variant: Option<String>,
}

struct ApmSection;

impl ManifestSection for ApmSection {
    fn name(&self) -> &'static str {
        Stage::Apm.name()
    }

    fn compile(&self, table: Option<&KindParams<'_>>) -> Result<CompiledSection, Vec<Diagnostic>> {
        let Some(table) = table else {
            return Ok(CompiledSection::new(ApmSettings::default()));
        };
        let wire: ApmWire = table.deserialize().map_err(|d| vec![d])?;
        let mut errors = Vec::new();
        let mut duration = |key: &str, v: &Option<toml::Spanned<String>>| match v {
            Some(v) => parse_duration(key, v).map_err(|d| errors.push(d)).ok(),
            None => None,
        };
        let period = duration("period", &wire.period).unwrap_or(DEFAULT_PERIOD);
        let scrape_interval =
            duration("scrape-interval", &wire.scrape_interval).unwrap_or(DEFAULT_SCRAPE_INTERVAL);
        let hold =
            duration("for", &wire.hold).unwrap_or_else(|| scaled(Duration::from_secs(60), period));
        if let Some(p) = &wire.period
            && period < Duration::from_secs(60)
        {
            errors.push(Diagnostic::new(
                "`period` must be at least 1m (its shortest alert window is 1/8640 of it)",
                Some(p.span()),
            ));
        }
        if let Some(s) = &wire.scrape_interval
            && scrape_interval < Duration::from_millis(100)
        {
            errors.push(Diagnostic::new(
                "`scrape-interval` must be at least 100ms",
                Some(s.span()),
            ));
        }
        let webhook = match &wire.webhook {
            Some(url) => {
                let u = url.get_ref();
                if let Some(problem) = webhook_problem(u) {
                    errors.push(Diagnostic::new(problem, Some(url.span())));
                }
                Some(Webhook {
                    url: u.clone(),
                    token_env: wire.webhook_token_env.as_ref().map(|t| t.get_ref().clone()),
                })
            }
            None => {
                if let Some(t) = &wire.webhook_token_env {
                    errors.push(Diagnostic::new(
                        "`webhook-token-env` needs a `webhook`",
                        Some(t.span()),
                    ));
                }
                None
            }
        };
        let mut slos = BTreeMap::new();
        for (name, spanned) in &wire.slo {
            let w = spanned.get_ref();
            let target = *w.target.get_ref();
            if !(target > 0.0 && target < 1.0) {
                errors.push(
                    Diagnostic::new(
                        format!("`target` of SLO `{name}` must be between 0 and 1, not {target}"),
                        Some(w.target.span()),
                    )
                    .with_help("write the share of good requests, like 0.999 for 99.9 %"),
                );
            }
            let objective = match (w.objective.get_ref().as_str(), &w.threshold) {
                ("availability", None) => Some(Objective::Availability),
                ("availability", Some(t)) => {
                    errors.push(Diagnostic::new(
                        format!("SLO `{name}`: an availability objective has no `threshold`"),
                        Some(t.span()),
                    ));
                    None
                }
                ("latency", Some(t)) => parse_duration("threshold", t)
                    .map_err(|d| errors.push(d))
                    .ok()
                    .map(|threshold| Objective::Latency { threshold }),
                ("latency", None) => {
                    errors.push(Diagnostic::new(
                        format!(
                            "SLO `{name}`: a latency objective needs a `threshold`, like \"250ms\""
                        ),
                        Some(spanned.span()),
                    ));
                    None
                }
                (other, _) => {
                    errors.push(
                        Diagnostic::new(
                            format!("SLO `{name}`: unknown objective `{other}`"),
                            Some(w.objective.span()),
                        )
                        .with_help("write \"availability\" or \"latency\""),
                    );
                    None
                }
            };
            if let Some(objective) = objective {
                slos.insert(
                    name.clone(),
                    Slo {
                        name: name.clone(),
                        objective,
                        target,
                        variant: w.variant.clone(),
                    },
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompiledSection::new(ApmSettings {
            period,
            scrape_interval,
            min_requests: wire.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS),
            hold,
            slos,
            webhook,
        }))
    }

    fn json_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {
                "period": { "type": "string", "default": "30d", "description": "the SLO period; alert windows scale with it" },
                "scrape-interval": { "type": "string", "default": "1s", "description": "how often the collector scrapes" },
                "min-requests": { "type": "integer", "default": DEFAULT_MIN_REQUESTS, "description": "fewer requests in an alert's long window never alert" },
                "for": { "type": "string", "description": "how long an alert's condition holds before it fires (default 1m scaled by the period)" },
                "webhook": { "type": "string", "description": "URL alerts are POSTed to as JSON" },
                "webhook-token-env": { "type": "string", "description": "environment variable with the webhook's bearer token" },
                "slo": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "objective": { "enum": ["availability", "latency"] },
                            "target": { "type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1 },
                            "threshold": { "type": "string", "description": "latency objectives: the latency a good request stays within" },
                            "variant": { "type": "string", "description": "only this variant's requests" }
                        },
                        "required": ["objective", "target"],
                        "additionalProperties": false
                    }
                }
            }
        })
    }
}

/// The `[apm]` section, for [`mlops_core::KindRegistry::register_stage_settings`].
pub fn section() -> Arc<dyn ManifestSection> {
    Arc::new(ApmSection)
}
