//! The model registry's records in the ledger: model versions with their
//! lineage, and the stage changes of each version.
//!
//! A model version is a content-addressed artifact (its digest is a sha256
//! over its files' paths and hashes) registered under a model name with an
//! increasing number, and the lineage it was made from: the git commit, the
//! training data's hash, the metrics, the run and step that packaged it,
//! and the version before it. A version's stage (`none`, `staging`,
//! `production`, `archived`) is the last of its stage changes, each kept
//! with who made it and why. At most one version of a model is in `staging`
//! and one in `production`: promoting a version archives the one it
//! replaces, in the same transaction.
//!
//! This module owns the rows; packaging and verifying the files on disk is
//! the `cd` stage crate's business.

use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::ledger::{GitState, Ledger, LedgerError, format_ms, now_ms};

/// Where a model version stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStage {
    /// Registered, not promoted.
    None,
    /// Deployed to staging, awaiting promotion.
    Staging,
    /// Serving production traffic.
    Production,
    /// Retired (replaced, or taken out by hand).
    Archived,
}

impl ModelStage {
    /// Every stage, in life order.
    pub const ALL: [ModelStage; 4] = [
        ModelStage::None,
        ModelStage::Staging,
        ModelStage::Production,
        ModelStage::Archived,
    ];

    /// The name stored in the ledger and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStage::None => "none",
            ModelStage::Staging => "staging",
            ModelStage::Production => "production",
            ModelStage::Archived => "archived",
        }
    }

    /// Whether at most one version of a model may hold this stage.
    pub fn is_exclusive(self) -> bool {
        matches!(self, ModelStage::Staging | ModelStage::Production)
    }
}

impl fmt::Display for ModelStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelStage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelStage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a model stage; expected none, staging, production or archived"
                )
            })
    }
}

/// One file of a model artifact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ArtifactFile {
    /// Path inside the artifact, relative, `/`-separated.
    pub path: String,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A version to register: what [`Ledger::register_model_version`] takes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModelVersion {
    /// The model's name.
    pub model: String,
    /// The artifact's digest (sha256 hex over its files).
    pub digest: String,
    /// Where the artifact is stored, relative to the project directory.
    pub path: String,
    /// The artifact's files, sorted by path.
    pub files: Vec<ArtifactFile>,
    /// The metrics the model was evaluated with, as the metrics file held them.
    pub metrics: Option<serde_json::Value>,
    /// The hash of the training data.
    pub data_hash: Option<String>,
    /// The git state the model was built from.
    pub git: GitState,
    /// The run that packaged it.
    pub run_id: Option<i64>,
    /// The step that packaged it.
    pub step: Option<String>,
}

/// A registered model version with its lineage and current stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    /// The model's name.
    pub model: String,
    /// Its number: 1 for the first version of the model, then up by one.
    pub number: i64,
    /// The artifact's digest.
    pub digest: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// Where the artifact is stored, relative to the project directory.
    pub path: String,
    /// The artifact's files, sorted by path.
    pub files: Vec<ArtifactFile>,
    /// The metrics recorded with it.
    pub metrics: Option<serde_json::Value>,
    /// The training data's hash.
    pub data_hash: Option<String>,
    /// The git commit it was built from.
    pub commit: Option<String>,
    /// Whether the working tree differed from that commit.
    pub dirty: bool,
    /// The run that packaged it.
    pub run_id: Option<i64>,
    /// The step that packaged it.
    pub step: Option<String>,
    /// The number of the model's newest version when this one was
    /// registered.
    pub parent: Option<i64>,
    /// Its stage now: that of its last stage change (`none` without one).
    pub stage: ModelStage,
}

impl ModelVersion {
    /// `model:number`, the way users name a version.
    pub fn id(&self) -> String {
        format!("{}:{}", self.model, self.number)
    }

    /// The total size of its files in bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// One stage change of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageChange {
    /// The stage it moved to.
    pub stage: ModelStage,
    /// When (RFC 3339).
    pub at: String,
    /// Who moved it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// A version moved into production, as [`Ledger::production_changes`]
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductionChange {
    /// The model.
    pub model: String,
    /// The version promoted.
    pub number: i64,
    /// The version that held production before, if any.
    pub previous: Option<i64>,
    /// When (RFC 3339).
    pub at: String,
    /// Who moved it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

impl ProductionChange {
    /// A promotion of an older version than the one it replaced.
    pub fn is_rollback(&self) -> bool {
        self.previous.is_some_and(|p| self.number < p)
    }
}

/// What [`Ledger::set_model_stage`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageTransition {
    /// The model.
    pub model: String,
    /// The version moved.
    pub number: i64,
    /// Its stage before.
    pub from: ModelStage,
    /// Its stage now.
    pub to: ModelStage,
    /// The version that held `to` before and is now archived.
    pub archived: Option<i64>,
}

/// A registry failure.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// No version matches.
    #[error("no model version `{spec}` in the registry: {hint}")]
    NotFound {
        /// What was asked for.
        spec: String,
        /// What the registry holds instead.
        hint: String,
    },
    /// A digest prefix matches several versions.
    #[error("`{spec}` matches several model versions: {}; give more of the digest", candidates.join(", "))]
    Ambiguous {
        /// The prefix.
        spec: String,
        /// `model:number (digest)` of each match.
        candidates: Vec<String>,
    },
    /// A bare version number, but the registry holds several models.
    #[error("`{spec}` does not say which model: the registry holds {}; write `MODEL:{spec}`", models.join(", "))]
    WhichModel {
        /// What was asked for.
        spec: String,
        /// The models.
        models: Vec<String>,
    },
    /// Not a way to name a version.
    #[error(
        "`{spec}` does not name a model version: write `MODEL:N`, `N`, `MODEL@latest`, `MODEL@staging`, `MODEL@production` or a digest prefix of 8 or more hex digits"
    )]
    BadSpec {
        /// What was given.
        spec: String,
    },
    /// The version already has that stage.
    #[error("{model}:{number} is already in {stage}; nothing to change")]
    AlreadyInStage {
        /// The model.
        model: String,
        /// The version.
        number: i64,
        /// Its stage.
        stage: ModelStage,
    },
    /// A stage change without a reason.
    #[error("a stage change of {model}:{number} needs a reason")]
    NoReason {
        /// The model.
        model: String,
        /// The version.
        number: i64,
    },
}

const VERSION_COLUMNS: &str =
    "v.model, v.number, v.digest, v.created_at_ms, v.path, v.files, v.metrics, v.data_hash,
     v.git_commit, v.git_dirty, v.run_id, v.step, v.parent,
     (SELECT c.stage FROM model_stage_changes c WHERE c.model = v.model AND c.number = v.number
      ORDER BY c.id DESC LIMIT 1)";

fn bad_column(column: usize, message: impl ToString) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        message.to_string().into(),
    )
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelVersion> {
    let files: String = r.get(5)?;
    let metrics: Option<String> = r.get(6)?;
    let stage: Option<String> = r.get(13)?;
    Ok(ModelVersion {
        model: r.get(0)?,
        number: r.get(1)?,
        digest: r.get(2)?,
        created_at: format_ms(r.get(3)?),
        path: r.get(4)?,
        files: serde_json::from_str(&files).map_err(|e| bad_column(5, e))?,
        metrics: metrics
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| bad_column(6, e))?,
        data_hash: r.get(7)?,
        commit: r.get(8)?,
        dirty: r.get::<_, Option<bool>>(9)?.unwrap_or(false),
        run_id: r.get(10)?,
        step: r.get(11)?,
        parent: r.get(12)?,
        stage: match stage {
            None => ModelStage::None,
            Some(s) => s.parse().map_err(|e: String| bad_column(13, e))?,
        },
    })
}

/// How a user named a version.
enum Spec<'a> {
    Number(Option<&'a str>, i64),
    Latest(Option<&'a str>),
    InStage(&'a str, ModelStage),
    Digest(&'a str),
}

fn parse_spec(spec: &str) -> Option<Spec<'_>> {
    let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let number = |s: &str| {
        (!s.is_empty() && s.len() < 8 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    if let Some(digest) = spec.strip_prefix("sha256:") {
        return (digest.len() >= 8 && is_hex(digest)).then_some(Spec::Digest(digest));
    }
    if let Some((model, n)) = spec.split_once(':') {
        return (!model.is_empty())
            .then(|| {
                if n == "latest" {
                    Some(Spec::Latest(Some(model)))
                } else {
                    number(n).map(|n| Spec::Number(Some(model), n))
                }
            })
            .flatten();
    }
    if let Some((model, at)) = spec.split_once('@') {
        if model.is_empty() {
            return None;
        }
        return match at {
            "latest" => Some(Spec::Latest(Some(model))),
            stage => match stage.parse() {
                Ok(s @ (ModelStage::Staging | ModelStage::Production)) => {
                    Some(Spec::InStage(model, s))
                }
                _ => None,
            },
        };
    }
    if spec == "latest" {
        return Some(Spec::Latest(None));
    }
    if let Some(n) = number(spec) {
        return Some(Spec::Number(None, n));
    }
    (spec.len() >= 8 && is_hex(spec)).then_some(Spec::Digest(spec))
}

impl Ledger {
    /// Registers a model version, in one transaction. A version of the same
    /// model with the same digest is returned as it is (`false`: not newly
    /// created); otherwise the new version gets the next number and the
    /// model's newest version as its parent.
    pub fn register_model_version(
        &self,
        new: &NewModelVersion,
    ) -> Result<(ModelVersion, bool), RegistryError> {
        let files = serde_json::to_string(&new.files).unwrap_or_else(|_| "[]".to_owned());
        let metrics = new.metrics.as_ref().map(serde_json::Value::to_string);
        let mut conn = self.conn();
        // Immediate: the number is read and taken under the write lock, so
        // two processes packaging at once cannot both take it.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.err("begin registering a model version"))?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT number FROM model_versions WHERE model = ?1 AND digest = ?2",
                params![new.model, new.digest],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("look up a model version"))?;
        let (number, created) = match existing {
            Some(n) => (n, false),
            None => {
                let parent: Option<i64> = tx
                    .query_row(
                        "SELECT MAX(number) FROM model_versions WHERE model = ?1",
                        params![new.model],
                        |r| r.get(0),
                    )
                    .map_err(self.err("number a model version"))?;
                let number = parent.unwrap_or(0) + 1;
                tx.execute(
                    "INSERT INTO model_versions (model, number, digest, created_at_ms, path, files,
                        metrics, data_hash, git_commit, git_dirty, run_id, step, parent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        new.model,
                        number,
                        new.digest,
                        now_ms(),
                        new.path,
                        files,
                        metrics,
                        new.data_hash,
                        new.git.commit,
                        new.git.dirty,
                        new.run_id,
                        new.step,
                        parent
                    ],
                )
                .map_err(self.err("register a model version"))?;
                (number, true)
            }
        };
        let version = self.version_in(&tx, &new.model, number)?;
        tx.commit().map_err(self.err("commit a model version"))?;
        let version = version.ok_or_else(|| RegistryError::NotFound {
            spec: format!("{}:{number}", new.model),
            hint: "it vanished while being registered".to_owned(),
        })?;
        Ok((version, created))
    }

    fn version_in(
        &self,
        tx: &rusqlite::Connection,
        model: &str,
        number: i64,
    ) -> Result<Option<ModelVersion>, LedgerError> {
        tx.query_row(
            &format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE v.model = ?1 AND v.number = ?2"
            ),
            params![model, number],
            version_row,
        )
        .optional()
        .map_err(self.err("read a model version"))
    }

    fn versions_where(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<ModelVersion>, LedgerError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM model_versions v WHERE {filter}
                 ORDER BY v.rowid DESC"
            ))
            .map_err(self.err("read model versions"))?;
        stmt.query_map(args, version_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read model versions"))
    }

    /// Version `number` of `model`, if registered.
    pub fn model_version(
        &self,
        model: &str,
        number: i64,
    ) -> Result<Option<ModelVersion>, RegistryError> {
        Ok(self.version_in(&self.conn(), model, number)?)
    }

    /// The names of the registered models, sorted.
    pub fn model_names(&self) -> Result<Vec<String>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT DISTINCT model FROM model_versions ORDER BY model")
            .map_err(self.err("list the registered models"))?;
        Ok(stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(self.err("list the registered models"))?)
    }

    /// The versions of `model` (of every model with `None`), newest first.
    pub fn model_versions(&self, model: Option<&str>) -> Result<Vec<ModelVersion>, RegistryError> {
        Ok(match model {
            Some(m) => self.versions_where("v.model = ?1", params![m])?,
            None => self.versions_where("1", [])?,
        })
    }

    /// Resolves how a user names a version: `MODEL:N`, `MODEL@latest`,
    /// `MODEL@staging`, `MODEL@production`, `N` or `latest` (of `model`, or
    /// of the only registered model), or a digest prefix of at least 8 hex
    /// digits (of `model`'s versions, or of any model's).
    pub fn find_model_version(
        &self,
        model: Option<&str>,
        spec: &str,
    ) -> Result<ModelVersion, RegistryError> {
        let spec = spec.trim();
        let parsed = parse_spec(spec).ok_or_else(|| RegistryError::BadSpec {
            spec: spec.to_owned(),
        })?;
        let not_found = |hint: String| RegistryError::NotFound {
            spec: spec.to_owned(),
            hint,
        };
        // A bare number or `latest` needs a model: the one given, or the
        // only one there is.
        let which_model = |named: Option<&str>| -> Result<String, RegistryError> {
            if let Some(m) = named.or(model) {
                return Ok(m.to_owned());
            }
            let models = self.model_names()?;
            match models.as_slice() {
                [] => Err(not_found("no model version is registered yet".to_owned())),
                [one] => Ok(one.clone()),
                _ => Err(RegistryError::WhichModel {
                    spec: spec.to_owned(),
                    models,
                }),
            }
        };
        let numbers_of = |m: &str| -> Result<String, RegistryError> {
            let versions = self.model_versions(Some(m))?;
            Ok(match (versions.last(), versions.first()) {
                (Some(first), Some(last)) if first.number == last.number => {
                    format!("model `{m}` has only version {}", first.number)
                }
                (Some(first), Some(last)) => format!(
                    "model `{m}` has versions {} to {}",
                    first.number, last.number
                ),
                _ => {
                    let models = self.model_names()?;
                    if models.is_empty() {
                        "no model version is registered yet".to_owned()
                    } else {
                        format!("no model `{m}`; the registry holds {}", models.join(", "))
                    }
                }
            })
        };
        match parsed {
            Spec::Number(named, n) => {
                let m = which_model(named)?;
                match self.model_version(&m, n)? {
                    Some(v) => Ok(v),
                    None => Err(not_found(numbers_of(&m)?)),
                }
            }
            Spec::Latest(named) => {
                let m = which_model(named)?;
                match self
                    .model_versions(Some(&m))?
                    .into_iter()
                    .max_by_key(|v| v.number)
                {
                    Some(v) => Ok(v),
                    None => Err(not_found(numbers_of(&m)?)),
                }
            }
            Spec::InStage(m, stage) => match self.model_in_stage(m, stage)? {
                Some(v) => Ok(v),
                None if self.model_versions(Some(m))?.is_empty() => Err(not_found(numbers_of(m)?)),
                None => Err(not_found(format!("no version of `{m}` is in {stage}"))),
            },
            Spec::Digest(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                let pattern = format!("{prefix}%");
                let mut found = match model {
                    Some(m) => self
                        .versions_where("v.model = ?1 AND v.digest LIKE ?2", params![m, pattern])?,
                    None => self.versions_where("v.digest LIKE ?1", params![pattern])?,
                };
                match found.len() {
                    0 => Err(not_found(match model {
                        Some(m) => format!("no version of `{m}` has a digest starting with it"),
                        None => "no version has a digest starting with it".to_owned(),
                    })),
                    1 => Ok(found.remove(0)),
                    _ => Err(RegistryError::Ambiguous {
                        spec: spec.to_owned(),
                        candidates: found
                            .iter()
                            .map(|v| {
                                format!("{} ({})", v.id(), &v.digest[..v.digest.len().min(16)])
                            })
                            .collect(),
                    }),
                }
            }
        }
    }

    /// The version of `model` currently in `stage` (the newest such for
    /// `none` and `archived`, which several may hold).
    pub fn model_in_stage(
        &self,
        model: &str,
        stage: ModelStage,
    ) -> Result<Option<ModelVersion>, RegistryError> {
        let conn = self.conn();
        Ok(self.in_stage(&conn, model, stage)?)
    }

    fn in_stage(
        &self,
        conn: &rusqlite::Connection,
        model: &str,
        stage: ModelStage,
    ) -> Result<Option<ModelVersion>, LedgerError> {
        conn.query_row(
            &format!(
                "SELECT * FROM (SELECT {VERSION_COLUMNS} AS current FROM model_versions v WHERE v.model = ?1)
                 WHERE COALESCE(current, 'none') = ?2 ORDER BY number DESC LIMIT 1"
            ),
            params![model, stage.as_str()],
            version_row,
        )
        .optional()
        .map_err(self.err("find the model version in a stage"))
    }

    /// Moves a version to `stage`, recording who and why. Moving it to
    /// `staging` or `production` archives the version that held that stage
    /// (reason `replaced by MODEL:N`), in the same transaction. Moving a
    /// version to the stage it is in is an error.
    pub fn set_model_stage(
        &self,
        model: &str,
        number: i64,
        stage: ModelStage,
        actor: &str,
        reason: &str,
    ) -> Result<StageTransition, RegistryError> {
        if reason.trim().is_empty() {
            return Err(RegistryError::NoReason {
                model: model.to_owned(),
                number,
            });
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.err("begin a stage change"))?;
        let Some(version) = self.version_in(&tx, model, number)? else {
            drop(tx);
            drop(conn);
            let spec = format!("{model}:{number}");
            // Reuse the lookup's message, which says what there is instead.
            return Err(match self.find_model_version(None, &spec) {
                Err(e) => e,
                Ok(_) => RegistryError::NotFound {
                    spec,
                    hint: "it vanished during the stage change".to_owned(),
                },
            });
        };
        if version.stage == stage {
            return Err(RegistryError::AlreadyInStage {
                model: model.to_owned(),
                number,
                stage,
            });
        }
        let at = now_ms();
        let mut archived = None;
        if stage.is_exclusive()
            && let Some(holder) = self.in_stage(&tx, model, stage)?
        {
            insert_change(
                &tx,
                model,
                holder.number,
                ModelStage::Archived,
                at,
                actor,
                &format!("replaced by {model}:{number}"),
            )
            .map_err(self.err("archive the replaced model version"))?;
            archived = Some(holder.number);
        }
        insert_change(&tx, model, number, stage, at, actor, reason)
            .map_err(self.err("record a stage change"))?;
        tx.commit().map_err(self.err("commit a stage change"))?;
        Ok(StageTransition {
            model: model.to_owned(),
            number,
            from: version.stage,
            to: stage,
            archived,
        })
    }

    /// Every move of a version into `production`, oldest first, each with
    /// the version that held production just before it (if any): the
    /// release history, from which promotions and rollbacks are counted.
    pub fn production_changes(&self) -> Result<Vec<ProductionChange>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT model, number, at_ms, actor, reason FROM model_stage_changes
                 WHERE stage = 'production' ORDER BY id",
            )
            .map_err(self.err("read the production history"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the production history"))?;
        let mut holder: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        Ok(rows
            .into_iter()
            .map(|(model, number, at, actor, reason)| {
                let previous = holder.insert(model.clone(), number);
                ProductionChange {
                    model,
                    number,
                    previous,
                    at: format_ms(at),
                    actor,
                    reason,
                }
            })
            .collect())
    }

    /// The stage changes of a version, oldest first.
    pub fn model_stage_history(
        &self,
        model: &str,
        number: i64,
    ) -> Result<Vec<StageChange>, RegistryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT stage, at_ms, actor, reason FROM model_stage_changes
                 WHERE model = ?1 AND number = ?2 ORDER BY id",
            )
            .map_err(self.err("read the stage history"))?;
        Ok(stmt
            .query_map(params![model, number], |r| {
                let stage: String = r.get(0)?;
                Ok(StageChange {
                    stage: stage.parse().map_err(|e: String| bad_column(0, e))?,
                    at: format_ms(r.get(1)?),
                    actor: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the stage history"))?)
    }
}

fn insert_change(
    tx: &Transaction<'_>,
    model: &str,
    number: i64,
    stage: ModelStage,
    at: i64,
    actor: &str,
    reason: &str,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO model_stage_changes (model, number, stage, at_ms, actor, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![model, number, stage.as_str(), at, actor, reason],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        (dir, ledger)
    }

    fn new(model: &str, digest: &str) -> NewModelVersion {
        NewModelVersion {
            model: model.to_owned(),
            digest: digest.to_owned(),
            path: format!(".mlops/artifacts/{digest}"),
            files: vec![ArtifactFile {
                path: "model.json".to_owned(),
                sha256: "ab".repeat(32),
                size: 42,
            }],
            metrics: Some(serde_json::json!({"accuracy": 0.9})),
            data_hash: Some("cd".repeat(32)),
            git: GitState {
                commit: Some("c0ffee".to_owned()),
                branch: None,
                dirty: true,
            },
            run_id: Some(7),
            step: Some("package".to_owned()),
        }
    }

    const D1: &str = "1111111111aa";
    const D2: &str = "2222222222bb";
    const D3: &str = "2222222222cc";

    #[test]
    fn registering_numbers_versions_and_links_parents() {
        let (_dir, l) = ledger();
        let (v1, created) = l.register_model_version(&new("iris", D1)).unwrap();
        assert!(created);
        assert_eq!(
            (v1.number, v1.parent, v1.stage),
            (1, None, ModelStage::None)
        );
        assert_eq!(v1.metrics, Some(serde_json::json!({"accuracy": 0.9})));
        assert_eq!((v1.commit.as_deref(), v1.dirty), (Some("c0ffee"), true));
        assert_eq!((v1.run_id, v1.step.as_deref()), (Some(7), Some("package")));
        assert_eq!(v1.files.len(), 1);
        let (again, created) = l.register_model_version(&new("iris", D1)).unwrap();
        assert!(!created);
        assert_eq!(again, v1);
        let (v2, created) = l.register_model_version(&new("iris", D2)).unwrap();
        assert!(created);
        assert_eq!((v2.number, v2.parent), (2, Some(1)));
        // Numbers are per model; the same digest may be another model's.
        let (w1, _) = l.register_model_version(&new("wine", D1)).unwrap();
        assert_eq!((w1.number, w1.parent), (1, None));
        let all: Vec<String> = l
            .model_versions(None)
            .unwrap()
            .iter()
            .map(ModelVersion::id)
            .collect();
        assert_eq!(all, ["wine:1", "iris:2", "iris:1"]);
        let iris: Vec<i64> = l
            .model_versions(Some("iris"))
            .unwrap()
            .iter()
            .map(|v| v.number)
            .collect();
        assert_eq!(iris, [2, 1]);
        assert_eq!(l.model_names().unwrap(), ["iris", "wine"]);
    }

    #[test]
    fn versions_are_found_by_every_spec() {
        let (_dir, l) = ledger();
        assert_eq!(
            l.find_model_version(None, "1").unwrap_err().to_string(),
            "no model version `1` in the registry: no model version is registered yet"
        );
        l.register_model_version(&new("iris", D1)).unwrap();
        l.register_model_version(&new("iris", D2)).unwrap();
        let id = |spec: &str| l.find_model_version(None, spec).map(|v| v.id());
        assert_eq!(id("iris:1").unwrap(), "iris:1");
        assert_eq!(id("2").unwrap(), "iris:2");
        assert_eq!(id("latest").unwrap(), "iris:2");
        assert_eq!(id("iris@latest").unwrap(), "iris:2");
        assert_eq!(id("11111111").unwrap(), "iris:1");
        assert_eq!(id("sha256:2222222222B").unwrap(), "iris:2");
        assert_eq!(
            id("iris:9").unwrap_err().to_string(),
            "no model version `iris:9` in the registry: model `iris` has versions 1 to 2"
        );
        assert_eq!(
            id("wine:1").unwrap_err().to_string(),
            "no model version `wine:1` in the registry: no model `wine`; the registry holds iris"
        );
        assert_eq!(
            id("iris@production").unwrap_err().to_string(),
            "no model version `iris@production` in the registry: no version of `iris` is in production"
        );
        assert!(matches!(
            l.find_model_version(None, "iris:x"),
            Err(RegistryError::BadSpec { .. })
        ));
        assert!(matches!(
            l.find_model_version(None, "abc"),
            Err(RegistryError::BadSpec { .. })
        ));

        l.register_model_version(&new("wine", D3)).unwrap();
        assert_eq!(
            id("1").unwrap_err().to_string(),
            "`1` does not say which model: the registry holds iris, wine; write `MODEL:1`"
        );
        assert_eq!(
            l.find_model_version(Some("wine"), "1").unwrap().id(),
            "wine:1"
        );
        assert_eq!(
            id("22222222").unwrap_err().to_string(),
            "`22222222` matches several model versions: wine:1 (2222222222cc), iris:2 (2222222222bb); give more of the digest"
        );
        assert_eq!(
            l.find_model_version(Some("iris"), "22222222").unwrap().id(),
            "iris:2"
        );
        assert_eq!(id("2222222222c").unwrap(), "wine:1");
    }

    #[test]
    fn promoting_archives_the_previous_holder() {
        let (_dir, l) = ledger();
        for d in [D1, D2, D3] {
            l.register_model_version(&new("iris", d)).unwrap();
        }
        let t = l
            .set_model_stage("iris", 1, ModelStage::Production, "ana", "first release")
            .unwrap();
        assert_eq!(
            (t.from, t.to, t.archived),
            (ModelStage::None, ModelStage::Production, None)
        );
        l.set_model_stage("iris", 2, ModelStage::Staging, "ana", "candidate")
            .unwrap();
        assert_eq!(
            l.model_in_stage("iris", ModelStage::Production)
                .unwrap()
                .map(|v| v.number),
            Some(1)
        );
        let t = l
            .set_model_stage("iris", 2, ModelStage::Production, "bo", "better f1")
            .unwrap();
        assert_eq!((t.from, t.archived), (ModelStage::Staging, Some(1)));
        let stage = |n| l.model_version("iris", n).unwrap().unwrap().stage;
        assert_eq!(stage(1), ModelStage::Archived);
        assert_eq!(stage(2), ModelStage::Production);
        assert_eq!(stage(3), ModelStage::None);
        assert_eq!(l.model_in_stage("iris", ModelStage::Staging).unwrap(), None);
        assert_eq!(
            l.model_in_stage("iris", ModelStage::None)
                .unwrap()
                .map(|v| v.number),
            Some(3)
        );
        assert_eq!(
            l.find_model_version(None, "iris@production")
                .unwrap()
                .number,
            2
        );
        let history = l.model_stage_history("iris", 1).unwrap();
        let h: Vec<(ModelStage, &str, &str)> = history
            .iter()
            .map(|c| (c.stage, c.actor.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            h,
            [
                (ModelStage::Production, "ana", "first release"),
                (ModelStage::Archived, "bo", "replaced by iris:2"),
            ]
        );
        assert_eq!(l.model_stage_history("iris", 2).unwrap().len(), 2);

        let err = l
            .set_model_stage("iris", 2, ModelStage::Production, "bo", "again")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "iris:2 is already in production; nothing to change"
        );
        let err = l
            .set_model_stage("iris", 9, ModelStage::Staging, "bo", "x")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no model version `iris:9` in the registry: model `iris` has versions 1 to 3"
        );
        let err = l
            .set_model_stage("iris", 3, ModelStage::Staging, "bo", " ")
            .unwrap_err();
        assert_eq!(err.to_string(), "a stage change of iris:3 needs a reason");
        // Archiving by hand touches no other version.
        let t = l
            .set_model_stage("iris", 2, ModelStage::Archived, "bo", "rollback")
            .unwrap();
        assert_eq!(t.archived, None);
        assert_eq!(
            l.model_in_stage("iris", ModelStage::Production).unwrap(),
            None
        );
    }

    #[test]
    fn stages_parse_and_serialize_lowercase() {
        for s in ModelStage::ALL {
            assert_eq!(s.as_str().parse::<ModelStage>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("prod".parse::<ModelStage>().is_err());
    }
}
