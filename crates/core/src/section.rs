//! Manifest sections that stage crates own, compiled once.
//!
//! A stage crate may own a top-level table of `mlops.toml` (`[infra]`) or
//! the settings of its own stage (the keys of `[release]` beside its
//! `steps`). It registers a [`crate::ManifestSection`] (the trait lives in
//! `kind`, beside the `KindParams` it compiles from, so that this module
//! depends on no other); the manifest compiler hands
//! it the table with its spans, once, before any step is compiled, and keeps
//! the [`CompiledSection`] it returns. Step kinds read the compiled value
//! through [`crate::KindParams::section`], which also records what they read:
//! the canonical form of that part becomes part of the step's fingerprint
//! (a [`SectionRead`]), so that evidence recorded under another definition
//! of the section never counts as current. Nothing here reads files.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A compiled section: the domain value the kinds use, and its canonical
/// form (the value serialized), from which the parts kinds read are
/// fingerprinted. Comments, key order and spelling that compile to the same
/// value give the same canonical form.
#[derive(Clone)]
pub struct CompiledSection {
    value: Arc<dyn Any + Send + Sync>,
    canonical: Arc<serde_json::Value>,
}

impl CompiledSection {
    /// Wraps a compiled value. Its serialized form is the canonical one, so
    /// it must serialize deterministically (structs and sorted maps do).
    ///
    /// # Panics
    ///
    /// When `value` cannot be serialized to JSON (a map with non-string
    /// keys): that is a bug in the section's crate, not bad input, and a
    /// fixed fallback would hide every later edit from the fingerprints.
    pub fn new<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        let canonical = serde_json::to_value(&value)
            .expect("a compiled section serializes to JSON (string map keys)");
        CompiledSection {
            value: Arc::new(value),
            canonical: Arc::new(canonical),
        }
    }

    /// The compiled value, if it is a `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.value.clone().downcast::<T>().ok()
    }

    /// The canonical form of the whole section.
    pub fn canonical(&self) -> &serde_json::Value {
        &self.canonical
    }

    /// The digest of the part at `path` (keys of the canonical form, from
    /// the top); a missing part digests as `null`.
    pub(crate) fn digest(&self, path: &[&str]) -> String {
        let mut value = Some(self.canonical.as_ref());
        for key in path {
            value = value.and_then(|v| v.get(key));
        }
        let text =
            serde_json::to_string(value.unwrap_or(&serde_json::Value::Null)).unwrap_or_default();
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }
}

impl fmt::Debug for CompiledSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CompiledSection")
            .field(&self.canonical)
            .finish()
    }
}

/// A part of a section a step's kind read when it was compiled: named as
/// in the manifest (`[infra.environment]`, `[infra.services.iris]`,
/// `[project]`), with the digest of its canonical form. It is part of the
/// step's definition: when the part changes, the step's earlier evidence
/// no longer counts and a cached result no longer applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct SectionRead {
    /// The part, as `[table.key…]`.
    pub section: String,
    /// blake3 of the part's canonical JSON.
    pub digest: String,
}

impl SectionRead {
    /// A read of `path` inside the section `name`, with its digest.
    pub fn new(name: &str, path: &[&str], digest: String) -> Self {
        let mut section = format!("[{name}");
        for key in path {
            section.push('.');
            section.push_str(key);
        }
        section.push(']');
        SectionRead { section, digest }
    }
}

/// Every compiled section of a manifest, by name. A section that failed to
/// compile is absent: its errors were reported.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sections {
    pub(crate) compiled: BTreeMap<String, CompiledSection>,
    /// Sections that failed to compile (their errors are reported).
    pub(crate) failed: std::collections::BTreeSet<String>,
}

/// Why a stage crate's registration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// Two registrations of one name.
    #[error("{what} `{name}` is registered twice")]
    Duplicate {
        /// `kind`, `section`, `evidence kind`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A top-level section named like a stage or `[project]` would hide
    /// that table; a stage's settings must be named after their stage.
    #[error("section `{name}` is not allowed: {why}")]
    Reserved {
        /// The name.
        name: String,
        /// Why.
        why: String,
    },
}
