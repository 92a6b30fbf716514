//! Release versions: which semantic version a promotion releases, and the
//! git tag that names it.
//!
//! A release version is a [semver](https://semver.org) version derived
//! from the last release of the model (its git tag) and the commits since,
//! by the project's [`VersionPolicy`] (`[release.versioning]`):
//!
//! - conventional commits decide the bump: a subject `feat: …` asks for a
//!   minor bump, `fix: …` or `perf: …` for a patch, `type!: …` (or
//!   `type(scope)!: …`) and a `BREAKING CHANGE:` (or `BREAKING-CHANGE:`)
//!   footer for a major one; other types (`docs`, `chore`, `refactor`, …)
//!   ask for nothing;
//! - a commit touching a file that matches `major-paths` or `minor-paths`
//!   (globs relative to the repository's root) asks for that bump;
//! - the highest bump asked for wins; when no commit asks for one (no
//!   commits, or none conventional), `default-bump` applies;
//! - **before 1.0.0** a major bump raises the minor number (`0.3.2` →
//!   `0.4.0`), cargo's convention, where `0.x` → `0.(x+1)` is the breaking
//!   change; minor and patch bumps are as usual. Going to `1.0.0` is a
//!   human's decision: tag a commit `iris-v1.0.0` and the next release
//!   counts from it;
//! - a previous version with a pre-release (`1.0.0-rc.1`) is released as
//!   its own version when the bump fits in it (`1.0.0-rc.1` + patch →
//!   `1.0.0`), as npm's `semver inc` does;
//! - the first release of a model is `initial` (default `0.1.0`).
//!
//! The registry version goes into the build metadata, so a release names
//! the model version it shipped: `0.2.0+iris.7`. Build metadata does not
//! take part in precedence, and the git tag leaves it out:
//! the tag is `tag` with `{model}` and `{version}` replaced, default
//! `{model}-v{version}` (`iris-v0.2.0`). Why not `v0.2.0+iris.7`: `+` is a
//! valid ref character but breaks tools that put tags in URLs (it decodes
//! to a space) or in container image tags (not allowed), and the model's
//! name in the tag lets several models of one repository have their own
//! release line. The tag's message names the model version.
//!
//! [`next_version`] is a pure function; [`git`] reads the last release and
//! the commits since from a repository and creates the tag. This module
//! does not decide *when* a release happens (the release steps do) nor
//! render its notes ([`crate::notes`]).

use std::fmt;

use globset::{Glob, GlobSet, GlobSetBuilder};
use semver::{BuildMetadata, Prerelease, Version};
use serde::{Deserialize, Serialize};

pub mod git;

/// The default tag template.
pub const DEFAULT_TAG: &str = "{model}-v{version}";

/// How much a release raises its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bump {
    /// `x.y.z` → `x.y.(z+1)`.
    Patch,
    /// `x.y.z` → `x.(y+1).0`.
    Minor,
    /// `x.y.z` → `(x+1).0.0` (before 1.0.0: the minor, see the module docs).
    Major,
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        })
    }
}

/// `[release.versioning]`: how release versions and tags are made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct VersionPolicy {
    /// The version of a model's first release.
    pub initial: Version,
    /// The git tag of a release: `{model}` and `{version}` (the version
    /// without build metadata) replaced. `{version}` must appear once.
    pub tag: String,
    /// The bump when no commit asks for one.
    pub default_bump: Bump,
    /// Whether conventional-commit subjects and footers decide the bump.
    pub conventional_commits: bool,
    /// Globs (from the repository's root): a commit touching a matching
    /// file asks for a major bump.
    pub major_paths: Vec<String>,
    /// Globs (from the repository's root): a commit touching a matching
    /// file asks for a minor bump.
    pub minor_paths: Vec<String>,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy {
            initial: Version::new(0, 1, 0),
            tag: DEFAULT_TAG.to_owned(),
            default_bump: Bump::Minor,
            conventional_commits: true,
            major_paths: Vec::new(),
            minor_paths: Vec::new(),
        }
    }
}

/// A versioning failure.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// A glob of `major-paths` or `minor-paths` does not parse.
    #[error("`{key}` glob `{pattern}` is invalid")]
    BadGlob {
        /// `major-paths` or `minor-paths`.
        key: &'static str,
        /// The glob.
        pattern: String,
        /// Why.
        #[source]
        source: globset::Error,
    },
    /// The tag template lacks `{version}` or has it more than once.
    #[error("tag template `{template}` must contain `{{version}}` exactly once")]
    BadTagTemplate {
        /// The template.
        template: String,
    },
    /// The model's name cannot go into build metadata.
    #[error(
        "model name `{model}` cannot name a release: build metadata takes ASCII letters, digits, `-` and `.`"
    )]
    BadModelName {
        /// The name.
        model: String,
    },
    /// The version would overflow.
    #[error("version {version} cannot be bumped: a number would overflow")]
    Overflow {
        /// The version.
        version: Version,
    },
}

/// What one commit says about the next version: the part of a commit
/// [`next_version`] reads. [`git::CommitInfo`] is one.
pub trait CommitFacts {
    /// The short id, to name the commit in a reason.
    fn short(&self) -> &str;
    /// The subject line.
    fn summary(&self) -> &str;
    /// The message after the subject (footers included), possibly empty.
    fn body(&self) -> &str;
    /// The paths the commit touched, from the repository's root.
    fn paths(&self) -> &[String];
}

impl CommitFacts for git::CommitInfo {
    fn short(&self) -> &str {
        &self.short
    }
    fn summary(&self) -> &str {
        &self.summary
    }
    fn body(&self) -> &str {
        &self.body
    }
    fn paths(&self) -> &[String] {
        &self.paths
    }
}

/// The version a release will have, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// The version, build metadata `{model}.{number}` included.
    pub version: Version,
    /// The bump applied to the number (`None`: a first release).
    pub bump: Option<Bump>,
    /// A sentence naming what decided: the commit and its rule, the
    /// default bump, or a first release.
    pub reason: String,
}

/// The tag names of one model's releases under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern {
    prefix: String,
    suffix: String,
}

impl TagPattern {
    /// The tag naming `version` (its build metadata left out).
    pub fn name(&self, version: &Version) -> String {
        let mut bare = version.clone();
        bare.build = BuildMetadata::EMPTY;
        format!("{}{bare}{}", self.prefix, self.suffix)
    }

    /// The version a tag names, if it is a release tag of this model.
    pub fn parse(&self, tag: &str) -> Option<Version> {
        let inner = tag.strip_prefix(&self.prefix)?.strip_suffix(&self.suffix)?;
        Version::parse(inner).ok()
    }
}

impl VersionPolicy {
    /// Every problem of the policy at once (empty: valid).
    pub fn check(&self) -> Vec<VersionError> {
        let mut errors = Vec::new();
        if self.tag.matches("{version}").count() != 1 {
            errors.push(VersionError::BadTagTemplate {
                template: self.tag.clone(),
            });
        }
        for (key, patterns) in [
            ("major-paths", &self.major_paths),
            ("minor-paths", &self.minor_paths),
        ] {
            if let Err(e) = glob_set(key, patterns) {
                errors.push(e);
            }
        }
        errors
    }

    /// The tag names of `model`'s releases.
    ///
    /// # Errors
    ///
    /// [`VersionError::BadTagTemplate`].
    pub fn tag_pattern(&self, model: &str) -> Result<TagPattern, VersionError> {
        let filled = self.tag.replace("{model}", model);
        match filled.split_once("{version}") {
            Some((prefix, suffix)) if !suffix.contains("{version}") => Ok(TagPattern {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
            }),
            _ => Err(VersionError::BadTagTemplate {
                template: self.tag.clone(),
            }),
        }
    }
}

fn glob_set(key: &'static str, patterns: &[String]) -> Result<GlobSet, VersionError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|source| VersionError::BadGlob {
            key,
            pattern: pattern.clone(),
            source,
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|source| VersionError::BadGlob {
        key,
        pattern: patterns.join(", "),
        source,
    })
}

/// What a conventional-commit message asks for, and why.
fn conventional_bump(summary: &str, body: &str) -> Option<(Bump, &'static str)> {
    let breaking_footer = body.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("BREAKING CHANGE:") || l.starts_with("BREAKING-CHANGE:")
    });
    let (head, _) = summary.split_once(':')?;
    let head = head.trim_end();
    let (head, bang) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let kind = match head.split_once('(') {
        Some((kind, scope)) => {
            // `type(scope)`: the scope must close at the end.
            scope.strip_suffix(')')?;
            kind
        }
        None => head,
    };
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    if bang {
        return Some((Bump::Major, "a breaking change (`!`)"));
    }
    if breaking_footer {
        return Some((Bump::Major, "a `BREAKING CHANGE` footer"));
    }
    match kind.to_ascii_lowercase().as_str() {
        "feat" => Some((Bump::Minor, "a feature (`feat`)")),
        "fix" => Some((Bump::Patch, "a fix (`fix`)")),
        "perf" => Some((Bump::Patch, "a performance fix (`perf`)")),
        _ => None,
    }
}

/// Applies `bump` to `previous` by the rules of the module docs; returns
/// the bump actually applied (a major one before 1.0.0 is a minor one).
fn apply(previous: &Version, bump: Bump) -> Result<(Version, Bump), VersionError> {
    let overflow = || VersionError::Overflow {
        version: previous.clone(),
    };
    let applied = if previous.major == 0 && bump == Bump::Major {
        Bump::Minor
    } else {
        bump
    };
    let (major, minor, patch) = (previous.major, previous.minor, previous.patch);
    let next = if previous.pre.is_empty() {
        match applied {
            Bump::Major => Version::new(major.checked_add(1).ok_or_else(overflow)?, 0, 0),
            Bump::Minor => Version::new(major, minor.checked_add(1).ok_or_else(overflow)?, 0),
            Bump::Patch => Version::new(major, minor, patch.checked_add(1).ok_or_else(overflow)?),
        }
    } else {
        // A pre-release is released as itself when the bump fits in it.
        let fits = match applied {
            Bump::Major => minor == 0 && patch == 0,
            Bump::Minor => patch == 0,
            Bump::Patch => true,
        };
        if fits {
            Version::new(major, minor, patch)
        } else {
            let mut stripped = previous.clone();
            stripped.pre = Prerelease::EMPTY;
            return apply(&stripped, bump);
        }
    };
    Ok((next, applied))
}

/// The build metadata naming a model version: `{model}.{number}`.
///
/// # Errors
///
/// [`VersionError::BadModelName`] when the name holds characters build
/// metadata cannot (anything but ASCII letters, digits, `-` and `.`).
pub fn build_metadata(model: &str, number: i64) -> Result<BuildMetadata, VersionError> {
    BuildMetadata::new(&format!("{model}.{number}")).map_err(|_| VersionError::BadModelName {
        model: model.to_owned(),
    })
}

/// The next release version of `model` whose registry version `number`
/// is released, after `previous` (none: the first release) and `commits`
/// (those since `previous`, in any order), by `policy`.
///
/// # Errors
///
/// An invalid glob in the policy, a model name build metadata cannot hold,
/// a version number that would overflow.
pub fn next_version<C: CommitFacts>(
    previous: Option<&Version>,
    commits: &[C],
    model: &str,
    number: i64,
    policy: &VersionPolicy,
) -> Result<Planned, VersionError> {
    let build = build_metadata(model, number)?;
    let Some(previous) = previous else {
        let mut version = policy.initial.clone();
        version.build = build;
        return Ok(Planned {
            reason: format!("the first release of {model}: the initial version"),
            version,
            bump: None,
        });
    };
    let major_paths = glob_set("major-paths", &policy.major_paths)?;
    let minor_paths = glob_set("minor-paths", &policy.minor_paths)?;

    // The highest bump asked for, and the first commit that asked for it.
    let mut decided: Option<(Bump, String)> = None;
    let mut consider = |bump: Bump, why: String| {
        if decided.as_ref().is_none_or(|(b, _)| bump > *b) {
            decided = Some((bump, why));
        }
    };
    for commit in commits {
        let name = format!("{} \"{}\"", commit.short(), commit.summary());
        if policy.conventional_commits
            && let Some((bump, rule)) = conventional_bump(commit.summary(), commit.body())
        {
            consider(bump, format!("commit {name} is {rule}"));
        }
        for (set, bump, key) in [
            (&major_paths, Bump::Major, "major-paths"),
            (&minor_paths, Bump::Minor, "minor-paths"),
        ] {
            if let Some(path) = commit.paths().iter().find(|p| set.is_match(p.as_str())) {
                consider(bump, format!("commit {name} touches `{path}` ({key})"));
            }
        }
    }
    let (wanted, mut reason) = decided.unwrap_or_else(|| {
        let why = if commits.is_empty() {
            "no commits since the last release".to_owned()
        } else {
            format!(
                "no commit of {} since the last release asks for a bump",
                commits.len()
            )
        };
        (policy.default_bump, format!("{why}: the default bump"))
    });
    let (mut version, applied) = apply(previous, wanted)?;
    version.build = build;
    reason = format!("{applied} after {previous}: {reason}");
    if applied != wanted {
        reason.push_str("; before 1.0.0 a major bump raises the minor version");
    }
    Ok(Planned {
        version,
        bump: Some(applied),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventional_subjects() {
        let check = |summary: &str, body: &str, expect: Option<Bump>| {
            assert_eq!(
                conventional_bump(summary, body).map(|(b, _)| b),
                expect,
                "{summary:?} / {body:?}"
            );
        };
        check("feat: x", "", Some(Bump::Minor));
        check("feat(api): x", "", Some(Bump::Minor));
        check("Feat: x", "", Some(Bump::Minor));
        check("fix: x", "", Some(Bump::Patch));
        check("perf(server): x", "", Some(Bump::Patch));
        check("feat!: x", "", Some(Bump::Major));
        check("refactor(core)!: x", "", Some(Bump::Major));
        check("chore: x", "BREAKING CHANGE: y", Some(Bump::Major));
        check("docs: x", "", None);
        check("feat x", "", None);
        check("feat(api: x", "", None);
        check("not a feat: really", "", None);
        check("update README", "BREAKING CHANGE: y", None);
    }

    #[test]
    fn pre_release_is_released_when_the_bump_fits() {
        let v = |s: &str| Version::parse(s).unwrap();
        let check = |prev: &str, bump: Bump, expect: &str| {
            assert_eq!(apply(&v(prev), bump).unwrap().0, v(expect), "{prev} {bump}");
        };
        check("1.0.0-rc.1", Bump::Patch, "1.0.0");
        check("1.0.0-rc.1", Bump::Major, "1.0.0");
        check("1.2.0-rc.1", Bump::Minor, "1.2.0");
        check("1.2.0-rc.1", Bump::Major, "2.0.0");
        check("1.2.3-rc.1", Bump::Minor, "1.3.0");
        check("0.3.0-beta", Bump::Major, "0.3.0");
    }

    #[test]
    fn tag_patterns() {
        let policy = VersionPolicy::default();
        let pattern = policy.tag_pattern("iris").unwrap();
        let v = Version::parse("0.2.0+iris.7").unwrap();
        assert_eq!(pattern.name(&v), "iris-v0.2.0");
        assert_eq!(pattern.parse("iris-v0.2.0"), Some(Version::new(0, 2, 0)));
        assert_eq!(pattern.parse("wine-v0.2.0"), None);
        assert_eq!(pattern.parse("iris-v0.2"), None);
        let policy = VersionPolicy {
            tag: "release/{model}/{version}".into(),
            ..VersionPolicy::default()
        };
        assert_eq!(
            policy.tag_pattern("iris").unwrap().name(&v),
            "release/iris/0.2.0"
        );
        for bad in ["v", "{version}-{version}"] {
            let policy = VersionPolicy {
                tag: bad.into(),
                ..VersionPolicy::default()
            };
            assert!(policy.tag_pattern("iris").is_err(), "{bad}");
            assert_eq!(policy.check().len(), 1, "{bad}");
        }
    }
}
