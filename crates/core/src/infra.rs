//! Infrastructure records in the ledger: every apply (what it planned, how
//! it ended, who ran it) and the services each environment runs.

use rusqlite::params;
use serde::Serialize;

use crate::ledger::{Ledger, LedgerError, RunLock, format_ms, now_ms};

const INFRA_LOCK_FILE: &str = "infra.lock";

/// A service as the last apply left it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InfraServiceRecord {
    /// The environment.
    pub environment: String,
    /// The provider.
    pub provider: String,
    /// The service.
    pub service: String,
    /// The revision applied.
    pub revision: String,
    /// The replicas applied.
    pub replicas: u32,
    /// The model version it serves.
    pub model_version: Option<String>,
    /// The provider's view after the apply (instance, endpoints, the
    /// applied definition), as JSON.
    pub state: serde_json::Value,
    /// The apply that wrote it.
    pub apply_id: i64,
    /// When.
    pub updated_at: String,
}

/// One apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InfraApplyRecord {
    /// Its id.
    pub id: i64,
    /// The environment.
    pub environment: String,
    /// The provider.
    pub provider: String,
    /// When it started.
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// `running`, `applied` or `failed`.
    pub status: String,
    /// The actions it planned, as JSON.
    pub actions: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
    /// Who ran it.
    pub actor: String,
    /// The pipeline run and step, when a step applied it.
    pub run_id: Option<i64>,
    /// The step.
    pub step: Option<String>,
}

impl Ledger {
    /// Takes the project's infrastructure lock, waiting for another apply
    /// to finish. Blocks: call it off async threads.
    pub fn lock_infra(&self) -> Result<RunLock, LedgerError> {
        let (file, path) = self.open_lock_file(INFRA_LOCK_FILE)?;
        file.lock()
            .map_err(|source| LedgerError::Lock { path, source })?;
        Ok(RunLock::from_file(file))
    }

    /// Records the start of an apply; returns its id.
    pub fn begin_infra_apply(
        &self,
        environment: &str,
        provider: &str,
        actions: &serde_json::Value,
        actor: &str,
        step: Option<(i64, &str)>,
    ) -> Result<i64, LedgerError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO infra_applies (environment, provider, started_at_ms, status, actions, actor, run_id, step)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7)",
            params![
                environment,
                provider,
                now_ms(),
                actions.to_string(),
                actor,
                step.map(|s| s.0),
                step.map(|s| s.1)
            ],
        )
        .map_err(self.err("record an infrastructure apply"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Records how an apply ended.
    pub fn finish_infra_apply(&self, id: i64, error: Option<&str>) -> Result<(), LedgerError> {
        self.conn()
            .execute(
                "UPDATE infra_applies SET status = ?2, finished_at_ms = ?3, error = ?4 WHERE id = ?1",
                params![
                    id,
                    if error.is_some() { "failed" } else { "applied" },
                    now_ms(),
                    error
                ],
            )
            .map_err(self.err("record the end of an infrastructure apply"))?;
        Ok(())
    }

    /// Records what runs for a service after an apply changed it.
    #[allow(clippy::too_many_arguments)]
    pub fn record_infra_service(
        &self,
        environment: &str,
        provider: &str,
        service: &str,
        revision: &str,
        replicas: u32,
        model_version: Option<&str>,
        state: &serde_json::Value,
        apply_id: i64,
    ) -> Result<(), LedgerError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO infra_services
                   (environment, provider, service, revision, replicas, model_version, state, apply_id, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    environment,
                    provider,
                    service,
                    revision,
                    replicas,
                    model_version,
                    state.to_string(),
                    apply_id,
                    now_ms()
                ],
            )
            .map_err(self.err("record an infrastructure service"))?;
        Ok(())
    }

    /// Forgets a service an apply removed.
    pub fn remove_infra_service(
        &self,
        environment: &str,
        provider: &str,
        service: &str,
    ) -> Result<(), LedgerError> {
        self.conn()
            .execute(
                "DELETE FROM infra_services WHERE environment = ?1 AND provider = ?2 AND service = ?3",
                params![environment, provider, service],
            )
            .map_err(self.err("remove an infrastructure service"))?;
        Ok(())
    }

    /// The services recorded for an environment and provider.
    pub fn infra_services(
        &self,
        environment: &str,
        provider: &str,
    ) -> Result<Vec<InfraServiceRecord>, LedgerError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT environment, provider, service, revision, replicas, model_version, state, apply_id, updated_at_ms
                 FROM infra_services WHERE environment = ?1 AND provider = ?2 ORDER BY service",
            )
            .map_err(self.err("read infrastructure services"))?;
        let rows = st
            .query_map(params![environment, provider], |r| {
                let state: String = r.get(6)?;
                Ok(InfraServiceRecord {
                    environment: r.get(0)?,
                    provider: r.get(1)?,
                    service: r.get(2)?,
                    revision: r.get(3)?,
                    replicas: r.get(4)?,
                    model_version: r.get(5)?,
                    state: serde_json::from_str(&state).unwrap_or(serde_json::Value::Null),
                    apply_id: r.get(7)?,
                    updated_at: format_ms(r.get(8)?),
                })
            })
            .map_err(self.err("read infrastructure services"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("read infrastructure services"))
    }

    /// The newest applies, newest first (of one environment, if given).
    pub fn infra_applies(
        &self,
        environment: Option<&str>,
        limit: usize,
    ) -> Result<Vec<InfraApplyRecord>, LedgerError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT id, environment, provider, started_at_ms, finished_at_ms, status, actions, error, actor, run_id, step
                 FROM infra_applies WHERE (?1 IS NULL OR environment = ?1) ORDER BY id DESC LIMIT ?2",
            )
            .map_err(self.err("read infrastructure applies"))?;
        let rows = st
            .query_map(params![environment, limit as i64], |r| {
                let actions: String = r.get(6)?;
                Ok(InfraApplyRecord {
                    id: r.get(0)?,
                    environment: r.get(1)?,
                    provider: r.get(2)?,
                    started_at: format_ms(r.get(3)?),
                    finished_at: r.get::<_, Option<i64>>(4)?.map(format_ms),
                    status: r.get(5)?,
                    actions: serde_json::from_str(&actions).unwrap_or(serde_json::Value::Null),
                    error: r.get(7)?,
                    actor: r.get(8)?,
                    run_id: r.get(9)?,
                    step: r.get(10)?,
                })
            })
            .map_err(self.err("read infrastructure applies"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.err("read infrastructure applies"))
    }

    /// The model version a service runs in an environment, per the last
    /// apply, with the state it recorded.
    pub fn infra_service(
        &self,
        environment: &str,
        provider: &str,
        service: &str,
    ) -> Result<Option<InfraServiceRecord>, LedgerError> {
        let found = self
            .infra_services(environment, provider)?
            .into_iter()
            .find(|s| s.service == service);
        Ok(found)
    }
}
