//! Release versions, tags and notes: the bump rules table-driven through
//! one `check`, the git side on real repositories made in temporary
//! directories, and the notes rendered with the built-in template and
//! with a project's own.

use std::path::Path;
use std::time::{Duration, SystemTime};

use git2::{Oid, Repository, Signature};
use mlops_core::registry::{ModelStage, ModelVersion};
use mlops_release::notes::{
    AnalysisSummary, CheckSummary, NotesContext, NotesError, NotesInput, NotesTemplate,
    RoundSummary, VariantNumbers, render,
};
use mlops_release::version::git::{
    CommitInfo, GitError, TagOutcome, commits_since_last_release, create_tag,
};
use mlops_release::version::{Bump, VersionPolicy, next_version};
use semver::Version;
use tempfile::TempDir;

// ---------------------------------------------------------------- bumps

fn commit(summary: &str, body: &str, paths: &[&str]) -> CommitInfo {
    CommitInfo {
        id: "0123456789abcdef0123456789abcdef01234567".into(),
        short: format!("c{}", summary.len()),
        summary: summary.into(),
        body: body.into(),
        author: "Ada".into(),
        time: 0,
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// Commits by name, for the table of [`bump_rules`].
fn named_commit(name: &str) -> CommitInfo {
    match name {
        "feat" => commit("feat: predict probabilities", "", &["src/model.rs"]),
        "fix" => commit("fix(server): empty batch", "", &["src/server.rs"]),
        "perf" => commit("perf: faster softmax", "", &[]),
        "chore" => commit("chore: bump deps", "", &["Cargo.lock"]),
        "plain" => commit("Update README", "", &["README.md"]),
        "bang" => commit("feat(api)!: drop v1 routes", "", &[]),
        "footer" => commit(
            "refactor: rename inputs",
            "Renames the tensor.\n\nBREAKING CHANGE: the input is `features` now",
            &[],
        ),
        "schema" => commit(
            "Change the input schema",
            "",
            &["schema/input.json", "README.md"],
        ),
        "data" => commit("fix: retrain on new data", "", &["data/iris.csv"]),
        other => panic!("no commit named {other}"),
    }
}

/// Plans the release of `iris:7` after `previous` with the named commits
/// and asserts the version, the bump and that the reason contains
/// `reason`.
#[track_caller]
fn check(
    policy: &VersionPolicy,
    previous: Option<&str>,
    commits: &[&str],
    expect: &str,
    bump: Option<Bump>,
    reason: &str,
) {
    let previous = previous.map(|p| Version::parse(p).unwrap());
    let commits: Vec<CommitInfo> = commits.iter().map(|c| named_commit(c)).collect();
    let planned = next_version(previous.as_ref(), &commits, "iris", 7, policy).unwrap();
    let case = format!("{previous:?} {commits:?}: {}", planned.reason);
    assert_eq!(planned.version.to_string(), expect, "{case}");
    assert_eq!(planned.bump, bump, "{case}");
    assert!(
        planned.reason.contains(reason),
        "reason lacks {reason:?}: {case}"
    );
}

/// policy, previous version, commits by name, expected version, bump, and
/// a part of the reason.
type Case<'a> = (
    &'a VersionPolicy,
    Option<&'a str>,
    &'a [&'a str],
    &'a str,
    Option<Bump>,
    &'a str,
);

#[test]
fn bump_rules() {
    use Bump::{Major, Minor, Patch};
    let default = VersionPolicy::default();
    let patch_default = VersionPolicy {
        default_bump: Patch,
        ..VersionPolicy::default()
    };
    let no_conventional = VersionPolicy {
        conventional_commits: false,
        ..VersionPolicy::default()
    };
    let paths = VersionPolicy {
        major_paths: vec!["schema/**".into()],
        minor_paths: vec!["data/*.csv".into()],
        ..VersionPolicy::default()
    };
    let one = VersionPolicy {
        initial: Version::new(1, 0, 0),
        ..VersionPolicy::default()
    };
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        // The highest bump wins; the reason names the commit that decided.
        (&default, Some("1.2.3"), &["fix"], "1.2.4+iris.7", Some(Patch), "c24 \"fix(server): empty batch\" is a fix"),
        (&default, Some("1.2.3"), &["perf"], "1.2.4+iris.7", Some(Patch), "performance"),
        (&default, Some("1.2.3"), &["fix", "feat"], "1.3.0+iris.7", Some(Minor), "\"feat: predict probabilities\" is a feature"),
        (&default, Some("1.2.3"), &["feat", "bang", "fix"], "2.0.0+iris.7", Some(Major), "drop v1 routes\" is a breaking change"),
        (&default, Some("1.2.3"), &["footer"], "2.0.0+iris.7", Some(Major), "a `BREAKING CHANGE` footer"),
        // Nothing conventional that bumps: the default bump.
        (&default, Some("1.2.3"), &["chore", "plain"], "1.3.0+iris.7", Some(Minor), "no commit of 2"),
        (&default, Some("1.2.3"), &[], "1.3.0+iris.7", Some(Minor), "no commits since the last release: the default bump"),
        (&patch_default, Some("1.2.3"), &["plain"], "1.2.4+iris.7", Some(Patch), "default bump"),
        (&no_conventional, Some("1.2.3"), &["bang"], "1.3.0+iris.7", Some(Minor), "default bump"),
        // Paths ask for their bump.
        (&paths, Some("1.2.3"), &["data"], "1.3.0+iris.7", Some(Minor), "touches `data/iris.csv` (minor-paths)"),
        (&paths, Some("1.2.3"), &["data", "schema"], "2.0.0+iris.7", Some(Major), "touches `schema/input.json` (major-paths)"),
        (&paths, Some("1.2.3"), &["plain"], "1.3.0+iris.7", Some(Minor), "default bump"),
        // Before 1.0.0 a major bump raises the minor (cargo's convention).
        (&default, Some("0.3.2"), &["bang"], "0.4.0+iris.7", Some(Minor), "before 1.0.0 a major bump raises the minor"),
        (&paths, Some("0.3.2"), &["schema"], "0.4.0+iris.7", Some(Minor), "before 1.0.0"),
        (&default, Some("0.3.2"), &["feat"], "0.4.0+iris.7", Some(Minor), "feature"),
        (&default, Some("0.3.2"), &["fix"], "0.3.3+iris.7", Some(Patch), "fix"),
        // A pre-release is released as itself when the bump fits in it.
        (&default, Some("1.0.0-rc.2"), &["fix"], "1.0.0+iris.7", Some(Patch), "after 1.0.0-rc.2"),
        // The first release: the initial version, whatever the commits.
        (&default, None, &["bang"], "0.1.0+iris.7", None, "the first release of iris"),
        (&one, None, &[], "1.0.0+iris.7", None, "initial version"),
    ];
    for (policy, previous, commits, expect, bump, reason) in cases {
        check(policy, *previous, commits, expect, *bump, reason);
    }
}

#[test]
fn policy_errors() {
    let bad = VersionPolicy {
        major_paths: vec!["src/[".into()],
        tag: "release".into(),
        ..VersionPolicy::default()
    };
    let errors: Vec<String> = bad.check().iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("`{version}` exactly once"), "{errors:?}");
    assert!(
        errors[1].contains("`major-paths` glob `src/[`"),
        "{errors:?}"
    );
    let err =
        next_version::<CommitInfo>(Some(&Version::new(1, 0, 0)), &[], "iris", 1, &bad).unwrap_err();
    assert!(err.to_string().contains("src/["), "{err}");
    let err = next_version::<CommitInfo>(None, &[], "my_model", 1, &VersionPolicy::default())
        .unwrap_err();
    assert!(err.to_string().contains("`my_model`"), "{err}");
}

#[test]
fn policy_from_toml() {
    let policy: VersionPolicy = toml::from_str(
        r#"
        initial = "1.0.0"
        tag = "{model}/{version}"
        default-bump = "patch"
        major-paths = ["schema/**"]
        "#,
    )
    .unwrap();
    assert_eq!(policy.initial, Version::new(1, 0, 0));
    assert_eq!(policy.default_bump, Bump::Patch);
    assert!(policy.conventional_commits);
    assert!(policy.check().is_empty());
    let err = toml::from_str::<VersionPolicy>("tag-prefix = \"v\"").unwrap_err();
    assert!(err.to_string().contains("tag-prefix"), "{err}");
    let err = toml::from_str::<VersionPolicy>("initial = \"1.0\"").unwrap_err();
    assert!(err.to_string().contains("initial"), "{err}");
}

// ---------------------------------------------------------------- git

struct TestRepo {
    dir: TempDir,
    repo: Repository,
}

impl TestRepo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let mut config = repo.config().unwrap();
        config.set_str("user.name", "Release Bot").unwrap();
        config.set_str("user.email", "bot@example.com").unwrap();
        TestRepo { dir, repo }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `files` and commits them with `message`, one second after
    /// the commit before.
    fn commit(&self, message: &str, files: &[(&str, &str)]) -> Oid {
        for (path, content) in files {
            let full = self.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        let mut index = self.repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let parent = self.repo.head().ok().map(|h| h.peel_to_commit().unwrap());
        let when = parent
            .as_ref()
            .map_or(1_700_000_000, |p| p.time().seconds() + 1);
        let sig = Signature::new("Ada", "ada@example.com", &git2::Time::new(when, 0)).unwrap();
        let parents: Vec<_> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }
}

fn iris_tags() -> mlops_release::version::TagPattern {
    VersionPolicy::default().tag_pattern("iris").unwrap()
}

#[test]
fn history_of_a_first_release_is_every_commit() {
    let repo = TestRepo::new();
    repo.commit("Initial commit", &[("README.md", "iris\n")]);
    repo.commit(
        "feat: train\n\nWith a body.\n",
        &[("src/train.rs", "fn main() {}\n")],
    );
    // A tag that is not a release of iris is ignored.
    create_tag(repo.path(), "wine-v3.0.0", "wine").unwrap();
    create_tag(repo.path(), "iris-nightly", "not a version").unwrap();

    let history = commits_since_last_release(repo.path(), &iris_tags()).unwrap();
    assert_eq!(history.last_tag, None);
    let summaries: Vec<_> = history.commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(summaries, ["feat: train", "Initial commit"]);
    let newest = &history.commits[0];
    assert_eq!(newest.body, "With a body.");
    assert_eq!(newest.author, "Ada");
    assert_eq!(newest.paths, ["src/train.rs"]);
    assert_eq!(newest.short, newest.id[..7]);
    assert_eq!(history.commits[1].paths, ["README.md"]);
}

#[test]
fn history_since_the_newest_release_on_head() {
    let repo = TestRepo::new();
    repo.commit("Initial commit", &[("README.md", "iris\n")]);
    create_tag(repo.path(), "iris-v0.1.0", "iris 0.1.0+iris.1").unwrap();
    repo.commit("fix: typo", &[("README.md", "Iris\n")]);
    create_tag(repo.path(), "iris-v0.1.1", "iris 0.1.1+iris.2").unwrap();
    repo.commit("feat: probabilities", &[("src/lib.rs", "// p\n")]);
    repo.commit("docs: usage", &[("docs/usage.md", "use it\n")]);
    // A project inside the repository finds it from its directory.
    std::fs::create_dir_all(repo.path().join("models/iris")).unwrap();

    let history =
        commits_since_last_release(&repo.path().join("models/iris"), &iris_tags()).unwrap();
    assert_eq!(
        history.last_tag,
        Some(("iris-v0.1.1".to_owned(), Version::new(0, 1, 1)))
    );
    let summaries: Vec<_> = history.commits.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(summaries, ["docs: usage", "feat: probabilities"]);

    // Versions and history together: the feature makes 0.2.0.
    let planned = next_version(
        history.last_tag.as_ref().map(|(_, v)| v),
        &history.commits,
        "iris",
        3,
        &VersionPolicy::default(),
    )
    .unwrap();
    assert_eq!(planned.version.to_string(), "0.2.0+iris.3");
    assert!(
        planned.reason.contains("feat: probabilities"),
        "{}",
        planned.reason
    );

    // Nothing since the last release: HEAD tagged.
    create_tag(repo.path(), "iris-v0.2.0", "iris 0.2.0+iris.3").unwrap();
    let history = commits_since_last_release(repo.path(), &iris_tags()).unwrap();
    assert_eq!(history.last_tag.unwrap().0, "iris-v0.2.0");
    assert!(history.commits.is_empty());
}

#[test]
fn tag_is_annotated_on_head_and_idempotent() {
    let repo = TestRepo::new();
    repo.commit("Initial commit", &[("README.md", "iris\n")]);
    let head = repo.commit("feat: train", &[("src/train.rs", "\n")]);

    let message = "iris 0.2.0+iris.7\n\nModel iris:7, digest abc.";
    let outcome = create_tag(repo.path(), "iris-v0.2.0", message).unwrap();
    assert_eq!(
        outcome,
        TagOutcome::Created {
            name: "iris-v0.2.0".into(),
            commit: head.to_string()
        }
    );
    let reference = repo.repo.find_reference("refs/tags/iris-v0.2.0").unwrap();
    let tag = reference.peel_to_tag().expect("an annotated tag");
    assert_eq!(
        tag.message().unwrap(),
        Some(format!("{message}\n").as_str())
    );
    assert_eq!(tag.target_id(), head);
    let tagger = tag.tagger().unwrap();
    assert_eq!(tagger.name().unwrap(), "Release Bot");
    assert_eq!(tagger.email().unwrap(), "bot@example.com");

    // A rerun on the same commit succeeds and changes nothing.
    let again = create_tag(repo.path(), "iris-v0.2.0", "another message").unwrap();
    assert_eq!(
        again,
        TagOutcome::Existed {
            name: "iris-v0.2.0".into(),
            commit: head.to_string()
        }
    );
    let tag = repo
        .repo
        .find_reference("refs/tags/iris-v0.2.0")
        .unwrap()
        .peel_to_tag()
        .unwrap();
    assert_eq!(
        tag.message().unwrap(),
        Some(format!("{message}\n").as_str())
    );

    // On another commit: an error naming both.
    let newer = repo.commit("fix: oops", &[("src/train.rs", "// fixed\n")]);
    let err = create_tag(repo.path(), "iris-v0.2.0", message).unwrap_err();
    assert!(matches!(err, GitError::TagConflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&head.to_string()) && text.contains(&newer.to_string()),
        "{text}"
    );
}

#[test]
fn tagger_falls_back_when_the_config_names_nobody() {
    let repo = TestRepo::new();
    // An empty name in the repository's config shadows any global one, and
    // git refuses it as a signature.
    let mut config = repo.repo.config().unwrap();
    config.set_str("user.name", "").unwrap();
    repo.commit("Initial commit", &[("README.md", "iris\n")]);
    create_tag(repo.path(), "iris-v0.1.0", "iris 0.1.0").unwrap();
    let tag = repo
        .repo
        .find_reference("refs/tags/iris-v0.1.0")
        .unwrap()
        .peel_to_tag()
        .unwrap();
    let tagger = tag.tagger().unwrap();
    assert_eq!(tagger.name().unwrap(), "mlops");
    assert_eq!(tagger.email().unwrap(), "mlops@localhost");
}

#[test]
fn git_errors_are_typed() {
    let plain = tempfile::tempdir().unwrap();
    // The temporary directory must not sit inside a repository itself.
    if Repository::discover(plain.path()).is_ok() {
        panic!(
            "{} is inside a git repository; set TMPDIR elsewhere",
            plain.path().display()
        );
    }
    let err = create_tag(plain.path(), "iris-v0.1.0", "m").unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("not a git repository: "),
        "{err}"
    );
    let err = commits_since_last_release(plain.path(), &iris_tags()).unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");

    let empty = TestRepo::new();
    let err = create_tag(empty.path(), "iris-v0.1.0", "m").unwrap_err();
    assert!(matches!(err, GitError::NoCommits { .. }), "{err:?}");
    assert!(err.to_string().contains("has no commits"), "{err}");
    let err = commits_since_last_release(empty.path(), &iris_tags()).unwrap_err();
    assert!(matches!(err, GitError::NoCommits { .. }), "{err:?}");

    empty.commit("Initial commit", &[("README.md", "iris\n")]);
    let err = create_tag(empty.path(), "iris v0.1.0..", "m").unwrap_err();
    assert!(matches!(err, GitError::InvalidTagName { .. }), "{err:?}");
}

// ---------------------------------------------------------------- notes

fn model_version(number: i64, metrics: serde_json::Value) -> ModelVersion {
    ModelVersion {
        model: "iris".into(),
        number,
        digest: format!("{number:0>8}deadbeef"),
        created_at: "2026-12-01T00:00:00Z".into(),
        path: format!(".mlops/models/iris/{number}"),
        files: Vec::new(),
        metrics: Some(metrics),
        data_hash: None,
        commit: None,
        dirty: false,
        run_id: Some(1),
        step: Some("package".into()),
        parent: None,
        stage: ModelStage::Staging,
    }
}

fn analysis() -> AnalysisSummary {
    let numbers = |requests, errors, p99| VariantNumbers {
        requests,
        errors,
        error_rate: Some(errors as f64 / requests as f64),
        p50_ms: Some(3.0),
        p99_ms: Some(p99),
    };
    AnalysisSummary {
        strategy: "canary".into(),
        verdict: "promote".into(),
        reason: "every round passed".into(),
        outcome: "iris:7 is production".into(),
        rounds: vec![RoundSummary {
            round: 1,
            weight: 25,
            sent: 200,
            unanswered: 0,
            verdict: "pass".into(),
            reason: "every check passed".into(),
            candidate: numbers(51, 0, 8.25),
            stable: Some(numbers(149, 1, 9.5)),
            checks: vec![CheckSummary {
                name: "error-rate".into(),
                verdict: "pass".into(),
                reason: "0 errors in 51 requests against 1 in 149 (p = 1)".into(),
            }],
        }],
    }
}

fn context() -> NotesContext {
    let previous = model_version(6, serde_json::json!({"accuracy": 0.95, "log_loss": 0.2}));
    let candidate = model_version(
        7,
        serde_json::json!({"accuracy": 0.966667, "log_loss": 0.110829, "f1_macro": 0.966583}),
    );
    let commits = [
        commit("feat: <probabilities> & more", "", &["src/lib.rs"]),
        commit("fix: empty batch", "", &[]),
    ];
    let version = Version::parse("0.2.0+iris.7").unwrap();
    let before = Version::new(0, 1, 1);
    NotesContext::new(NotesInput {
        project: "iris",
        version: &version,
        version_reason: Some("minor after 0.1.1: commit c28 is a feature (`feat`)"),
        tag: Some("iris-v0.2.0"),
        previous_version: Some(&before),
        candidate: &candidate,
        previous: Some(&previous),
        commits: &commits,
        analysis: Some(&analysis()),
        date: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_342_400),
    })
}

#[test]
fn notes_with_the_default_template() {
    let notes = render(None, &context()).unwrap();
    for line in [
        "# iris 0.2.0+iris.7",
        "Released on 2026-12-04 by project `iris`, tagged `iris-v0.2.0`.",
        "- **Model version:** `iris:7` (digest `00000007deadbeef`)",
        "- **Replaces:** `iris:6`",
        "- **Previous release:** 0.1.1",
        // Markdown, not HTML: nothing is escaped.
        "- feat: <probabilities> & more (`c28`, Ada)",
        "- fix: empty batch (`c16`, Ada)",
        "| metric | iris:7 | iris:6 | change |",
        "| accuracy | 0.966667 | 0.95 | +0.016667 (+1.8%) |",
        "| f1_macro | 0.966583 | – | new |",
        "| log_loss | 0.110829 | 0.2 | -0.089171 (-44.6%) |",
        "- **Verdict:** canary promote: every round passed",
        "- **Outcome:** iris:7 is production",
        "| 1 | 25 % | 200 | 51 | 0 | 8.3 | 149 | 1 | 9.5 | pass |",
        "- `error-rate` pass: 0 errors in 51 requests against 1 in 149 (p = 1)",
    ] {
        assert!(
            notes.lines().any(|l| l == line),
            "no line {line:?} in:\n{notes}"
        );
    }
}

#[test]
fn notes_of_a_first_release_without_analysis() {
    let candidate = model_version(1, serde_json::json!({"accuracy": 0.9}));
    let version = Version::parse("0.1.0+iris.1").unwrap();
    let ctx = NotesContext::new(NotesInput {
        project: "iris",
        version: &version,
        version_reason: None,
        tag: None,
        previous_version: None,
        candidate: &candidate,
        previous: None,
        commits: &[],
        analysis: None,
        date: SystemTime::UNIX_EPOCH,
    });
    let notes = render(None, &ctx).unwrap();
    for line in [
        "# iris 0.1.0+iris.1",
        "Released on 1970-01-01 by project `iris`.",
        "- **Replaces:** nothing, this is the first release in production",
        "No commits since the previous release.",
        "| metric | iris:1 |",
        "| accuracy | 0.9 |",
        "No release analysis was recorded.",
    ] {
        assert!(
            notes.lines().any(|l| l == line),
            "no line {line:?} in:\n{notes}"
        );
    }
}

#[test]
fn notes_with_a_project_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.md.tera");
    std::fs::write(
        &path,
        "{{ model }} {{ version }} ({{ commits | length }} commits)\n\
         {% for m in metrics %}{{ m.name }}={{ m.delta_text }};{% endfor %}\n",
    )
    .unwrap();
    let template = NotesTemplate::read(&path).unwrap();
    let notes = render(Some(&template), &context()).unwrap();
    assert_eq!(
        notes,
        "iris 0.2.0+iris.7 (2 commits)\naccuracy=+0.016667;f1_macro=;log_loss=-0.089171;\n"
    );
}

#[test]
fn template_errors_name_the_template_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.md.tera");
    std::fs::write(&path, "# {{ model }}\n\n{{ changelog }}\n").unwrap();
    let template = NotesTemplate::read(&path).unwrap();
    let err = render(Some(&template), &context()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            NotesError::Template {
                location: Some((3, _)),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.starts_with(&format!("notes template {}:3:", path.display())),
        "{text}"
    );
    assert!(text.contains("changelog"), "{text}");

    let syntax = NotesTemplate {
        path: "broken.md.tera".into(),
        source: "{% for c in commits %}\n{{ c.summary }}\n".into(),
    };
    let text = render(Some(&syntax), &context()).unwrap_err().to_string();
    assert!(text.starts_with("notes template broken.md.tera:"), "{text}");

    let missing = NotesTemplate::read(&dir.path().join("absent.tera")).unwrap_err();
    assert!(missing.to_string().contains("absent.tera"), "{missing}");
}
