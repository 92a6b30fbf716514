//! `secret-scan` against fixture trees and git repositories with planted
//! credentials: keys in the tree, keys only in history, look-alikes that
//! must not match, the allowlist, and the kind end to end through the
//! engine and the ledger.
//!
//! The fake credentials below are split into short pieces so that this
//! file does not hold one itself.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};
use mlops_ci::secret_scan::{ScanConfig, ScanReport, SecretScanError, scan};
use mlops_core::{Manifest, StepStatus};

const AWS_KEY_ID: &str = concat!("AKI", "AUJZDE8GXD6N", "CF10E");
const AWS_SECRET: &str = concat!("eL2", "HPcHyGcFRl1S", "PnXNYvMIHa+2", "o76umfXfKm+r", "5");
const PEM_BODY: &str = concat!(
    "kJP",
    "1VrT/1FJors+",
    "6ILi8IHn5kxs",
    "C7tVO+HbkQfy",
    "y+KV5zjR3j1t",
    "wdTKWTddB/Xh",
    "k",
);
const PEM_BODY_2: &str = concat!(
    "AS1",
    "voQG6yyzyN9z",
    "HYIa4UOrGNAT",
    "MuDJawTgsu8P",
    "O/799nKSNrh9",
    "UCauSDmLhuVt",
    "c",
);
const GITHUB: &str = concat!("ghp", "_iixgVoOnzyw", "2MzP0ZvzOMhf", "WuBByReQMsm9", "W");
const GITLAB: &str = concat!("glp", "at-cz7uW9XFO", "GOeMVNen5n1");
const SLACK: &str = concat!(
    "xox",
    "b-0751163726",
    "51-676122202",
    "9729-0meq7WJ",
    "jjIBAzupGhv7",
    "Ib3M0",
);
const SLACK_HOOK: &str = concat!(
    "htt",
    "ps://hooks.s",
    "lack.com/ser",
    "vices/TNBQNS",
    "6PU/BQ80IDW3",
    "7/a064gIiJhg",
    "B3cxLmAxzJLJ",
    "en",
);
const STRIPE: &str = concat!("sk_", "live_uHjDUrh", "hjeyxG4jDPMR", "CxGgc");
const GOOGLE: &str = concat!("AIz", "aDI4pZj59fhZ", "5R1Py4oJe2Jb", "mPTuSgR7cMy_");
const OPENAI: &str = concat!(
    "sk-",
    "proj-UcU3zr1",
    "ZtoLuCr64Cxq",
    "lIOdNKhiFXiQ",
    "2hzT-pLjHX2J",
    "iCLhKcIhP6Br",
    "1",
);
const ANTHROPIC: &str = concat!(
    "sk-",
    "ant-api03-iQ",
    "FeOUhGXZnnal",
    "5WisCgEBCY8f",
    "5N3-ynbdrZRz",
    "sGQBJg3UHKwk",
    "flF6XUi5Ahuq",
    "pfEnbtXAqwK8",
    "jZfALhLSzFyC",
    "mmdK",
);
const HUGGINGFACE: &str = concat!("hf_", "lhwJqtymYwUu", "fJSunpJCtgob", "uszgIhwgkz");
const PYPI: &str = concat!(
    "pyp",
    "i-AgEIcHlwaS",
    "5vcmcCdKDFRu",
    "Nw5GCf_hA6IL",
    "I8gJhead6-wJ",
    "9kFZJSqgmRB9",
    "H_iMb_lk777P",
    "ZnK8C",
);
const NPM: &str = concat!("npm", "_SdE0g9cRYN6", "87NElFJvhQ8X", "Im0ogR4HtXOf", "5");
const JWT: &str = concat!(
    "eyJ",
    "hbGciOiJIUzI",
    "1NiIsInR5cCI",
    "6IkpXVCJ9.ey",
    "JzdWIiOiIxMj",
    "M0NTY3ODkwIn",
    "0._yDUA_5zmS",
    "1swoPqApryPZ",
    "BlgvIyxJu2jG",
    "jNGkTfi3o",
);
const DB_PASSWORD: &str = concat!("Tr0", "ub4dor&3xK");
const URL_PASSWORD: &str = concat!("Qx7", "vR2mLp9");
const HIGH_ENTROPY: &str = concat!("MxX", "y9b4BzwoZ648", "jjNuFD7uacnw", "I");
const HEX_SECRET: &str = concat!("9f1", "45fda9988c79", "fc35526f7eae", "d46725a2a7b8", "6");

/// Every planted secret, for the never-leaks assertions.
const SECRETS: &[&str] = &[
    AWS_KEY_ID,
    AWS_SECRET,
    PEM_BODY,
    GITHUB,
    GITLAB,
    SLACK,
    SLACK_HOOK,
    STRIPE,
    GOOGLE,
    OPENAI,
    ANTHROPIC,
    HUGGINGFACE,
    PYPI,
    NPM,
    JWT,
    DB_PASSWORD,
    URL_PASSWORD,
    HIGH_ENTROPY,
    HEX_SECRET,
];

fn pem(kind: &str) -> String {
    format!(
        "-----BEGIN {kind}PRIVATE KEY-----\n{PEM_BODY}\n{PEM_BODY_2}\n-----END {kind}PRIVATE KEY-----\n"
    )
}

fn gcp_key_file() -> String {
    format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"iris-prod\",\n  \"private_key_id\": \"1\",\n  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\n{PEM_BODY}\\n{PEM_BODY_2}\\n-----END PRIVATE KEY-----\\n\",\n  \"client_email\": \"trainer@iris-prod.iam.gserviceaccount.com\"\n}}\n"
    )
}

/// Writes files (`/`-separated paths) under `dir`.
fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
    }
}

/// Findings as `rule file:line[ in commit abcdef12]`.
fn render(report: &ScanReport) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.rule, f.location()))
        .collect()
}

fn scan_files(files: &[(&str, &str)], config: &ScanConfig) -> ScanReport {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), files);
    scan(dir.path(), config).unwrap()
}

/// One fixture file and the finding scanning it must give, if any.
struct Case {
    path: &'static str,
    content: String,
    expect: Option<&'static str>,
}

/// A file whose scan finds `expect` (`rule file:line`).
fn one(path: &'static str, content: String, expect: &'static str) -> Case {
    Case {
        path,
        content,
        expect: Some(expect),
    }
}

/// A file whose scan finds nothing.
fn none(path: &'static str, content: &str) -> Case {
    Case {
        path,
        content: content.to_owned(),
        expect: None,
    }
}

/// Scans each case alone in a fresh directory (not a git repository) and
/// reports every mismatch at once.
fn check(cases: &[Case]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let found = render(&scan_files(
                &[(case.path, &case.content)],
                &ScanConfig::default(),
            ));
            let expect: Vec<String> = case.expect.iter().map(|e| e.to_string()).collect();
            (found != expect).then(|| {
                format!(
                    "{}: {:?}\n  expected {expect:?}\n  found    {found:?}",
                    case.path, case.content
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn planted_keys_in_the_tree_are_found() {
    check(&[
        one(
            "deploy/aws.sh",
            format!("#!/bin/sh\nexport AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n"),
            "aws-access-key-id deploy/aws.sh:2",
        ),
        one(
            "credentials.ini",
            format!("[default]\naws_secret_access_key = {AWS_SECRET}\n"),
            "aws-secret-access-key credentials.ini:2",
        ),
        one(
            "keys/deploy_rsa",
            format!("\n{}", pem("RSA ")),
            "private-key keys/deploy_rsa:2",
        ),
        one("id_ed25519", pem("OPENSSH "), "private-key id_ed25519:1"),
        one("keys/tls.pem", pem(""), "private-key keys/tls.pem:1"),
        one(
            "gcp/service-account.json",
            gcp_key_file(),
            "gcp-service-account-key gcp/service-account.json:5",
        ),
        one(
            "ci/publish.py",
            format!("import os\nGH = \"{GITHUB}\"\n"),
            "github-token ci/publish.py:2",
        ),
        one(
            ".gitlab-ci.yml",
            format!("variables:\n  GITLAB_TOKEN: {GITLAB}\n"),
            "gitlab-token .gitlab-ci.yml:2",
        ),
        one(
            "notify.py",
            format!("client = WebClient(token='{SLACK}')\n"),
            "slack-token notify.py:1",
        ),
        one(
            "notify.md",
            format!("Post to {SLACK_HOOK} when training ends.\n"),
            "slack-webhook notify.md:1",
        ),
        one(
            "billing.rb",
            format!("Stripe.api_key = \"{STRIPE}\"\n"),
            "stripe-secret-key billing.rb:1",
        ),
        one(
            "maps.js",
            format!("const key = '{GOOGLE}';\n"),
            "google-api-key maps.js:1",
        ),
        one(
            "notebooks/explore.ipynb",
            format!("{{\"cells\": [{{\"source\": [\"openai.api_key = '{OPENAI}'\"]}}]}}\n"),
            "openai-api-key notebooks/explore.ipynb:1",
        ),
        one(
            "agent.py",
            format!("\n\nclient = Anthropic(api_key=\"{ANTHROPIC}\")\n"),
            "anthropic-api-key agent.py:3",
        ),
        one(
            "train.py",
            format!("login(token=\"{HUGGINGFACE}\")\n"),
            "huggingface-token train.py:1",
        ),
        one(
            ".pypirc",
            format!("[pypi]\nusername = __token__\npassword = {PYPI}\n"),
            "pypi-token .pypirc:3",
        ),
        one(
            ".npmrc",
            format!("//registry.npmjs.org/:_authToken={NPM}\n"),
            "npm-token .npmrc:1",
        ),
        one(
            "tests/api.http",
            format!("GET /v1/models\nAuthorization: Bearer {JWT}\n"),
            "jwt tests/api.http:2",
        ),
        one(
            "docker-compose.yml",
            format!(
                "services:\n  etl:\n    environment:\n      DATABASE_URL: postgres://analyst:{URL_PASSWORD}@db.internal:5432/warehouse\n"
            ),
            "url-password docker-compose.yml:4",
        ),
        one(
            ".env",
            format!("DEBUG=1\nDB_PASSWORD={DB_PASSWORD}\n"),
            "generic-password .env:2",
        ),
        one(
            "config/settings.yaml",
            format!("db:\n  host: warehouse\n  password: \"{DB_PASSWORD}\"\n"),
            "generic-password config/settings.yaml:3",
        ),
        one(
            "app.toml",
            format!("[server]\nport = 8080\nsecret_key = '{DB_PASSWORD}'\n"),
            "generic-password app.toml:3",
        ),
        one(
            "settings.json",
            format!("{{\"db\": {{\"user\": \"etl\", \"password\": \"{DB_PASSWORD}\"}}}}\n"),
            "generic-password settings.json:1",
        ),
        one(
            "serve.py",
            format!("import hmac\nSIGNING_SALT = \"{HIGH_ENTROPY}\"\n"),
            "high-entropy-string serve.py:2",
        ),
        one(
            "webhook.py",
            format!("WEBHOOK_SECRET = \"{HEX_SECRET}\"\n"),
            "high-entropy-string webhook.py:1",
        ),
    ]);
}

#[test]
fn look_alikes_do_not_match() {
    check(&[
        // AWS's documented example keys.
        none(
            "docs/aws.md",
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
        ),
        none("notes.txt", "AKIAabcdefghijklmnop is not a key\n"),
        none("notes2.txt", "AKIAXXXXXXXXXXXXXXXX\n"),
        none(
            "keys/public.pem",
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEi6ZrN8fJtXwKp9B3qM2sVhY7cLdUeR4o\n-----END PUBLIC KEY-----\n",
        ),
        none(
            "docs/keys.md",
            "Paste your key:\n\n    -----BEGIN RSA PRIVATE KEY-----\n    ...\n    -----END RSA PRIVATE KEY-----\n",
        ),
        none("config.ini", "[db]\npassword = \"changeme\"\n"),
        none(
            "config.cfg",
            "[db]\npassword = os.environ[\"DB_PASSWORD\"]\n",
        ),
        none(
            "settings.yaml",
            "token: ${TOKEN}\napi_key: \"{{ secrets.API_KEY }}\"\n",
        ),
        none(
            ".env",
            "DB_PASSWORD=\nAPI_KEY=<your-api-key>\nSECRET=xxxxxxxxxxxx\nTOKEN=********\n",
        ),
        none(
            "tokenizer_config.json",
            "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"pad_token\": \"[PAD]\", \"model_max_length\": 512}\n",
        ),
        none(
            "deploy.yaml",
            "password_min_length: 12\ntoken_ttl: 3600\nsecret_name: db-credentials\nsecret: my-k8s-secret\n",
        ),
        none("settings.py", "password = os.environ[\"DB_PASSWORD\"]\n"),
        none(
            "Cargo.lock",
            "[[package]]\nname = \"x\"\nsource = \"git+https://example.com/x#3f786850e387550fdab836ed7e6dc881de23001b\"\nchecksum = \"a3f5c0e2b1d4f6a8c9e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4\"\n",
        ),
        none(
            "pyproject.toml",
            "[tool.uv.sources]\nlib = { git = \"https://github.com/o/lib\", rev = \"3f786850e387550fdab836ed7e6dc881de23001b\" }\n",
        ),
        none(
            "requirements.txt",
            "numpy==2.1.0 \\\n    --hash=sha256:a3f5c0e2b1d4f6a8c9e0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4\n",
        ),
        none(
            "model.py",
            "layer = \"TransformerEncoderLayerWithRotaryEmbedding\"\nname = \"test_model_v2_accuracy_threshold_final\"\nrun_id = \"550e8400-e29b-41d4-a716-446655440000\"\nclass_path = \"sklearn.ensemble.RandomForestClassifier\"\n",
        ),
        none(
            "data/paths.py",
            "TRAIN = \"s3://ml-bucket/datasets/iris/v2/train\"\nCACHE = \"/var/cache/models/resnet50/checkpoints\"\n",
        ),
        none(
            "ci.yml",
            "token: ghp_your_token_here\nkey: sk_test_4eC39HqLyjWDarjtT1zdp7dc\n",
        ),
        none(
            "hub.py",
            "from huggingface_hub import hf_hub_download\nx = 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\n",
        ),
        none(
            "db.md",
            "postgres://user:password@localhost/db\npostgres://postgres:postgres@localhost:5432/db\nhttps://oauth2:${CI_JOB_TOKEN}@gitlab.com/x.git\n",
        ),
        none(
            "build.gradle",
            "implementation 'com.google.guava:guava:33.0.0-jre'\nintegrity = \"sha512-Zq8mW2rTe5Qx7vR2mLp9Tr0ub4dor3xKMxXy9b4Bzwo\"\n",
        ),
    ]);
}

#[test]
fn binary_and_large_files_are_skipped_and_counted() {
    let mut big = format!("token = \"{GITHUB}\"\n");
    big.push_str(&"# padding\n".repeat(200));
    let binary = format!("\0\0\0{AWS_KEY_ID}");
    let config = ScanConfig {
        max_file_bytes: 1000,
        ..ScanConfig::default()
    };
    let report = scan_files(&[("big.py", &big), ("blob.bin", &binary)], &config);
    assert_eq!(render(&report), Vec::<String>::new());
    assert_eq!(report.files_skipped.too_large, 1);
    assert_eq!(report.files_skipped.binary, 1);
    assert_eq!(report.files_scanned, 0);
}

#[test]
fn skipped_directories_and_exclude_globs() {
    let key = format!("AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n");
    let config = ScanConfig {
        exclude: vec!["tests/fixtures/**".to_owned(), "*.sample".to_owned()],
        ..ScanConfig::default()
    };
    let report = scan_files(
        &[
            ("node_modules/aws-sdk/test.js", &key),
            (".venv/lib/site.py", &key),
            ("tests/fixtures/keys.env", &key),
            ("deep/dir/creds.sample", &key),
            ("src/creds.env", &key),
        ],
        &config,
    );
    assert_eq!(render(&report), ["aws-access-key-id src/creds.env:1"]);
    assert_eq!(report.files_skipped.excluded, 2);
}

#[test]
fn not_a_git_repository_scans_the_tree_and_skips_history() {
    let report = scan_files(
        &[("a.env", &format!("KEY={AWS_KEY_ID}\n"))],
        &ScanConfig::default(),
    );
    assert_eq!(render(&report), ["aws-access-key-id a.env:1"]);
    assert!(!report.history_scanned);
    assert_eq!(report.commits_scanned, 0);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("not in a git repository")),
        "{:?}",
        report.notes
    );
}

/// `git init` and nothing committed yet, as a new project starts: the tree
/// is scanned, the history is empty, and that is not an error.
#[test]
fn a_repository_without_commits_scans_the_tree_and_says_there_is_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let init = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(dir.path())
        .status()
        .expect("git is needed (apt-get install git; scripts/test-deps installs it)");
    assert!(init.success());
    write(dir.path(), &[("a.env", &format!("KEY={AWS_KEY_ID}\n"))]);
    let report = scan(dir.path(), &ScanConfig::default()).unwrap();
    assert_eq!(render(&report), ["aws-access-key-id a.env:1"]);
    assert_eq!(report.commits_scanned, 0);
    assert!(
        report.notes.iter().any(|n| n.contains("no commits yet")),
        "{:?}",
        report.notes
    );
}

/// A git repository in a temporary directory, committed to through the
/// index with a fixed signature.
struct Fixture {
    dir: tempfile::TempDir,
    repo: Repository,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        Fixture { dir, repo }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (`Some`) or deletes (`None`) files and commits; returns the
    /// commit id.
    fn commit(&self, changes: &[(&str, Option<&str>)], message: &str) -> String {
        let mut index = self.repo.index().unwrap();
        for (path, content) in changes {
            match content {
                Some(content) => {
                    write(self.path(), &[(path, content)]);
                    index.add_path(Path::new(path)).unwrap();
                }
                None => {
                    std::fs::remove_file(self.path().join(path)).unwrap();
                    index.remove_path(Path::new(path)).unwrap();
                }
            }
        }
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.com").unwrap();
        let parent = self
            .repo
            .head()
            .ok()
            .and_then(|h| h.target())
            .map(|oid| self.repo.find_commit(oid).unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }
}

#[test]
fn a_key_deleted_from_the_tree_is_found_in_history_with_its_commit() {
    let fx = Fixture::new();
    fx.commit(&[("README.md", Some("# iris\n"))], "init");
    let added = fx.commit(
        &[(
            "old/creds.env",
            Some(&format!("# staging\nAWS_ACCESS_KEY_ID={AWS_KEY_ID}\n")),
        )],
        "add creds",
    );
    fx.commit(&[("old/creds.env", None)], "remove creds");

    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert!(report.history_scanned);
    assert_eq!(report.commits_scanned, 3);
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.rule, "aws-access-key-id");
    assert_eq!(finding.file, "old/creds.env");
    assert_eq!(finding.line, 2);
    assert_eq!(finding.commit.as_deref(), Some(added.as_str()));
    assert_eq!(
        finding.location(),
        format!("old/creds.env:2 in commit {}", &added[..8])
    );

    let tree_only = ScanConfig {
        history: false,
        ..ScanConfig::default()
    };
    let report = scan(fx.path(), &tree_only).unwrap();
    assert!(report.findings.is_empty());
    assert!(!report.history_scanned);
}

#[test]
fn a_key_still_in_the_tree_is_reported_once_at_its_tree_location() {
    let fx = Fixture::new();
    fx.commit(
        &[("app.env", Some(&format!("GITHUB_TOKEN={GITHUB}\n")))],
        "add token",
    );
    // Later edits move the line and touch it again.
    fx.commit(
        &[(
            "app.env",
            Some(&format!("# app\nDEBUG=0\nGITHUB_TOKEN={GITHUB} \n")),
        )],
        "move token",
    );
    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert_eq!(render(&report), ["github-token app.env:3"]);
    assert!(report.findings[0].commit.is_none());
}

#[test]
fn history_is_bounded_by_max_commits() {
    let fx = Fixture::new();
    let first = fx.commit(&[("a.env", Some(&format!("KEY={AWS_KEY_ID}\n")))], "first");
    fx.commit(&[("a.env", None)], "second");
    fx.commit(&[("b.txt", Some("hello\n"))], "third");
    let config = ScanConfig {
        max_commits: 2,
        ..ScanConfig::default()
    };
    let report = scan(fx.path(), &config).unwrap();
    assert!(report.history_truncated);
    assert_eq!(report.commits_scanned, 2);
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert!(!report.history_truncated);
    assert_eq!(report.findings[0].commit.as_deref(), Some(first.as_str()));
}

#[test]
fn git_ignored_files_are_not_scanned_but_tracked_ones_are() {
    let fx = Fixture::new();
    fx.commit(
        &[(".gitignore", Some(".env\nsecrets/\n*.local\n"))],
        "ignore",
    );
    let key = format!("AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n");
    write(
        fx.path(),
        &[
            (".env", &key),
            ("secrets/prod.env", &key),
            ("untracked.env", &key),
        ],
    );
    // Ignored by a pattern but committed anyway: it is in the repository.
    let mut index = fx.repo.index().unwrap();
    write(fx.path(), &[("forced.local", &key)]);
    index.add_path(Path::new("forced.local")).unwrap();
    index.write().unwrap();

    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert_eq!(
        render(&report),
        [
            "aws-access-key-id forced.local:1",
            "aws-access-key-id untracked.env:1"
        ]
    );
    assert_eq!(report.files_skipped.ignored, 1);
}

#[test]
fn a_subdirectory_root_scans_only_its_own_history() {
    let fx = Fixture::new();
    let key = format!("AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n");
    let added = fx.commit(
        &[
            ("models/iris/old.env", Some(&key)),
            ("services/api/old.env", Some(&key)),
        ],
        "add",
    );
    fx.commit(
        &[
            ("models/iris/old.env", None),
            ("services/api/old.env", None),
        ],
        "remove",
    );
    let report = scan(&fx.path().join("models/iris"), &ScanConfig::default()).unwrap();
    assert_eq!(
        render(&report),
        [format!(
            "aws-access-key-id old.env:1 in commit {}",
            &added[..8]
        )]
    );
}

fn allowlist_report(allowlist: &str, config: &ScanConfig) -> Result<ScanReport, SecretScanError> {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (".mlops-secrets-allow", allowlist),
            ("tests/fixtures/fake.env", &format!("KEY={AWS_KEY_ID}\n")),
            ("api.http", &format!("Authorization: Bearer {JWT}\n")),
            (
                "src/app.py",
                &format!("GH = \"{GITHUB}\"\nSLACK = \"{SLACK}\"  # mlops:allow-secret\n"),
            ),
            (".env", &format!("DB_PASSWORD={DB_PASSWORD}\n")),
        ],
    );
    scan(dir.path(), config)
}

#[test]
fn allowlist_entries_and_the_inline_marker_accept_findings() {
    let report = allowlist_report("", &ScanConfig::default()).unwrap();
    assert_eq!(
        render(&report),
        [
            "generic-password .env:1",
            "jwt api.http:1",
            "github-token src/app.py:1",
            "aws-access-key-id tests/fixtures/fake.env:1",
        ]
    );
    assert_eq!(report.suppressed, 1, "the inline marker");

    let allowlist = "\
# reviewed 2024-05-01
path:tests/fixtures/**   # fake keys on purpose
rule:jwt path:*.http

finding:src/app.py:github-token:1
";
    let report = allowlist_report(allowlist, &ScanConfig::default()).unwrap();
    assert_eq!(render(&report), ["generic-password .env:1"]);
    assert_eq!(report.suppressed, 4);
    assert!(
        report
            .allowlist
            .as_deref()
            .unwrap()
            .ends_with(".mlops-secrets-allow")
    );

    // Every term of an entry must hold.
    let report = allowlist_report(
        "rule:jwt path:src/**\nrule:generic-password\n",
        &ScanConfig::default(),
    )
    .unwrap();
    assert_eq!(
        render(&report),
        [
            "jwt api.http:1",
            "github-token src/app.py:1",
            "aws-access-key-id tests/fixtures/fake.env:1",
        ]
    );
}

#[test]
fn a_commit_entry_accepts_history_findings_of_that_commit() {
    let fx = Fixture::new();
    let added = fx.commit(&[("old.env", Some(&format!("KEY={AWS_KEY_ID}\n")))], "add");
    fx.commit(&[("old.env", None)], "remove");
    write(
        fx.path(),
        &[(
            ".mlops-secrets-allow",
            &format!("commit:{}\n", &added[..10]),
        )],
    );
    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.suppressed, 1);
}

#[test]
fn a_malformed_allowlist_names_the_file_and_line() {
    let cases = [
        ("rule:jwt\n\nrules:jwt\n", 3, "unknown term `rules:`"),
        (
            "# c\npath:a/**\ntests/fixtures\n",
            3,
            "`tests/fixtures` is not an entry",
        ),
        (
            "rule:aws-key\n",
            1,
            "unknown rule `aws-key`; known rules: gcp-service-account-key",
        ),
        ("path:a[\n", 1, "invalid path pattern `a[`"),
        (
            "commit:xyz\n",
            1,
            "must name a commit by 7 to 40 hex digits",
        ),
        ("rule:jwt rule:jwt\n", 1, "`rule:` appears twice"),
        (
            "rule:jwt finding:x\n",
            1,
            "`finding:` must be alone on its line",
        ),
        ("path:\n", 1, "`path:` needs a value"),
    ];
    for (allowlist, line, message) in cases {
        let error = allowlist_report(allowlist, &ScanConfig::default()).unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, SecretScanError::Allowlist { line: l, .. } if l == line),
            "{allowlist:?}: {text}"
        );
        assert!(
            text.contains(&format!(".mlops-secrets-allow:{line}: ")) && text.contains(message),
            "{allowlist:?}: {text}"
        );
    }
}

#[test]
fn a_missing_configured_allowlist_is_an_error_naming_it() {
    let config = ScanConfig {
        allowlist: Some(PathBuf::from("security/allow.txt")),
        ..ScanConfig::default()
    };
    let error = allowlist_report("", &config).unwrap_err();
    assert!(
        matches!(error, SecretScanError::ReadAllowlist { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("cannot read the allowlist ")
            && error.to_string().ends_with("security/allow.txt"),
        "{error}"
    );
}

#[test]
fn a_missing_root_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = scan(&missing, &ScanConfig::default()).unwrap_err();
    assert!(error.to_string().starts_with("cannot scan "), "{error}");
    write(dir.path(), &[("file", "x")]);
    let error = scan(&dir.path().join("file"), &ScanConfig::default()).unwrap_err();
    assert!(error.to_string().ends_with("not a directory"), "{error}");
}

#[test]
fn reports_never_contain_the_secrets() {
    let fx = Fixture::new();
    let everything: String = SECRETS
        .iter()
        .enumerate()
        .map(|(i, s)| format!("K{i}_SECRET = \"{s}\"\n"))
        .collect();
    fx.commit(&[("history.env", Some(&everything))], "add");
    fx.commit(&[("history.env", None)], "remove");
    write(
        fx.path(),
        &[
            ("tree.env", everything.as_str()),
            ("keys/id_rsa", &pem("RSA ")),
            ("sa.json", &gcp_key_file()),
        ],
    );
    let report = scan(fx.path(), &ScanConfig::default()).unwrap();
    assert!(report.findings.iter().any(|f| f.commit.is_some()));
    assert!(
        report.findings.len() >= 2 * SECRETS.len(),
        "{:?}",
        render(&report)
    );
    let json = serde_json::to_string(&report).unwrap();
    let debug = format!("{report:?}");
    for secret in SECRETS {
        // Not the secret, nor a recognisable piece of it.
        let middle = &secret[secret.len() / 2 - 4..secret.len() / 2 + 4];
        for text in [&json, &debug] {
            assert!(
                !text.contains(secret) && !text.contains(middle),
                "report leaks {secret}"
            );
        }
    }
}

const HEAD: &str = "[project]\nname = \"p\"\n\n[ci.steps.secrets]\nkind = \"secret-scan\"\n";

/// Validates a manifest (given an `iac` stage, since stages are climbed
/// in order); the rendered diagnostics on error.
fn parse(manifest: &str) -> Result<(), String> {
    Manifest::parse(
        PathBuf::from("mlops.toml"),
        format!("{manifest}\n[iac.steps.ready]\nrun = \"true\"\n"),
        &crate::registry(),
    )
    .map(|_| ())
    .map_err(|d| d.to_string())
}

#[test]
fn the_with_table_is_validated() {
    assert_eq!(parse(HEAD), Ok(()));
    assert_eq!(
        parse(&format!(
            "{HEAD}with = {{ history = false, allowlist = \"sec/allow\", exclude = [\"tests/**\"], max-file-bytes = 4096, max-commits = 50 }}\n"
        )),
        Ok(())
    );
    let cases = [
        ("with = { histroy = false }\n", "unknown field `histroy`"),
        (
            "with = { exclude = [\"ok/**\", \"a[\"] }\n",
            "invalid exclude pattern `a[`",
        ),
        (
            "with = { max-commits = 0 }\n",
            "`max-commits` must be at least 1",
        ),
        (
            "with = { max-file-bytes = 0 }\n",
            "`max-file-bytes` must be at least 1",
        ),
        (
            "with = { allowlist = \" \" }\n",
            "`allowlist` must name a file",
        ),
        ("with = { history = \"yes\" }\n", "invalid type"),
    ];
    for (with, message) in cases {
        let error = parse(&format!("{HEAD}{with}")).unwrap_err();
        assert!(error.contains(message), "{with}: {error}");
    }
}

#[test]
fn the_kind_fails_the_step_and_records_evidence_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "config/prod.env",
                &format!("# prod\nAWS_ACCESS_KEY_ID={AWS_KEY_ID}\n"),
            ),
            ("src/train.py", "print('training')\n"),
        ],
    );
    let run = crate::run_pipeline(dir.path(), HEAD);
    let step = run.steps.iter().find(|s| s.name == "secrets").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(
        step.reason.as_deref(),
        Some("1 secret found: aws-access-key-id in config/prod.env:2")
    );
    let evidence = step
        .evidence
        .iter()
        .find(|e| e.kind == "secret-scan")
        .expect("secret-scan evidence");
    let findings = evidence.body["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["rule"], "aws-access-key-id");
    assert_eq!(findings[0]["file"], "config/prod.env");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(evidence.body["history_scanned"], false);
    let stored = serde_json::to_string(&run).unwrap();
    assert!(!stored.contains(AWS_KEY_ID), "the ledger holds the secret");
    let log = std::fs::read_to_string(step.log.as_ref().unwrap()).unwrap();
    assert!(log.contains("aws-access-key-id"), "{log}");
    assert!(log.contains("config/prod.env:2"), "{log}");
    assert!(!log.contains(AWS_KEY_ID), "the log holds the secret");
}

#[test]
fn the_kind_passes_a_clean_project_and_fails_on_a_bad_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("src/train.py", "print('training')\n")]);
    let run = crate::run_pipeline(dir.path(), HEAD);
    let step = run.steps.iter().find(|s| s.name == "secrets").unwrap();
    assert_eq!(step.status, StepStatus::Passed, "{:?}", step.reason);
    let evidence = step
        .evidence
        .iter()
        .find(|e| e.kind == "secret-scan")
        .unwrap();
    assert_eq!(evidence.body["findings"].as_array().map(Vec::len), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let run = crate::run_pipeline(
        dir.path(),
        &format!("{HEAD}with = {{ allowlist = \"missing-allow\" }}\n"),
    );
    let step = run.steps.iter().find(|s| s.name == "secrets").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    let reason = step.reason.as_deref().unwrap();
    assert!(
        reason.starts_with("cannot read the allowlist ") && reason.contains("missing-allow"),
        "{reason}"
    );
}
