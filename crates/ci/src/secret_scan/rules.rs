//! The detection rules: what a committed credential looks like, and what
//! only resembles one.
//!
//! Each [`Rule`] pairs a regular expression with a check that rejects
//! look-alikes (documented example keys, placeholders, hashes, ordinary
//! identifiers). [`scan_text`] runs every rule over one file's text and
//! reports at most one hit per line, the first rule in table order winning,
//! so that a token assigned to `api_key` is reported once, as what it is.
//! This module sees text only: walking files, git and allowlists live in
//! the sibling modules.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// The inline marker: a line containing it is never reported.
pub const ALLOW_MARKER: &str = "mlops:allow-secret";

/// One detection rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable identifier, used in findings and in the allowlist
    /// (`rule:aws-access-key-id`).
    pub id: &'static str,
    /// What the rule looks for, in a few words.
    pub description: &'static str,
    /// Lowercase fragments of which one must occur in a file for the rule
    /// to run at all; empty means always.
    keywords: &'static [&'static str],
    scope: Scope,
    regex: Regex,
    /// Accepts a match, returning the byte range of the secret in the
    /// scanned text, or rejects it as a look-alike.
    check: fn(&Candidate<'_>) -> Option<Range<usize>>,
}

/// Which files a rule runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every text file.
    Any,
    /// Configuration files only (`.env`, `.ini`, `.toml`, `.yaml`, …).
    Config,
    /// Every text file except lockfiles and checksum lists.
    NotLockfile,
}

/// What a file's name says about how to scan it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileClass {
    config: bool,
    lockfile: bool,
}

impl FileClass {
    /// Every rule applies: for text that is not a file (a report line).
    pub(crate) const ANY: FileClass = FileClass {
        config: true,
        lockfile: false,
    };

    /// Classifies a path (relative, `/`-separated).
    pub(crate) fn of(path: &str) -> FileClass {
        let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map_or("", |(_, ext)| ext);
        let config = name == ".env"
            || name.starts_with(".env.")
            || matches!(
                name.as_str(),
                ".npmrc" | ".pypirc" | ".netrc" | "credentials" | ".dockercfg"
            )
            || matches!(
                ext,
                "env"
                    | "ini"
                    | "cfg"
                    | "conf"
                    | "config"
                    | "cnf"
                    | "toml"
                    | "yaml"
                    | "yml"
                    | "json"
                    | "properties"
                    | "tfvars"
            );
        let lockfile = matches!(
            name.as_str(),
            "cargo.lock"
                | "package-lock.json"
                | "npm-shrinkwrap.json"
                | "yarn.lock"
                | "pnpm-lock.yaml"
                | "poetry.lock"
                | "pipfile.lock"
                | "uv.lock"
                | "pdm.lock"
                | "conda-lock.yml"
                | "composer.lock"
                | "gemfile.lock"
                | "go.sum"
                | "flake.lock"
        ) || matches!(ext, "lock" | "sum" | "sha256" | "sha512" | "md5")
            || name.ends_with(".min.js")
            || name.ends_with(".map")
            || name.ends_with(".svg");
        FileClass { config, lockfile }
    }
}

/// One match of a rule's regex, for its check.
struct Candidate<'t> {
    text: &'t str,
    caps: Captures<'t>,
    line: &'t str,
}

impl Candidate<'_> {
    /// The range of the first capture group that took part in the match.
    fn first_group(&self) -> Option<Range<usize>> {
        (1..self.caps.len()).find_map(|i| self.caps.get(i).map(|m| m.range()))
    }

    fn group(&self, i: usize) -> Option<Range<usize>> {
        self.caps.get(i).map(|m| m.range())
    }
}

/// A rule's hit in one text. Deliberately not `Debug`: it holds the
/// secret.
pub(crate) struct Hit {
    /// The rule that matched.
    pub(crate) rule: &'static Rule,
    /// 0-based line index in the scanned text.
    pub(crate) line: usize,
    /// The secret itself, kept only in memory to tell one secret from
    /// another; never serialized or logged.
    pub(crate) secret: String,
    /// The line carries [`ALLOW_MARKER`]: accepted, only counted.
    pub(crate) marked: bool,
}

/// Every rule, in priority order.
pub fn rules() -> &'static [Rule] {
    &RULES
}

/// Looks a rule up by id.
pub(crate) fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// Runs every rule over `text`, the content of a file of class `class`:
/// at most one hit per line, in line order.
pub(crate) fn scan_text(text: &str, class: FileClass) -> Vec<Hit> {
    let lower = text.to_ascii_lowercase();
    let lines = LineIndex::new(text);
    let mut taken: BTreeMap<usize, Hit> = BTreeMap::new();
    for rule in RULES.iter() {
        let applies = match rule.scope {
            Scope::Any => true,
            Scope::Config => class.config,
            Scope::NotLockfile => !class.lockfile,
        };
        if !applies
            || !(rule.keywords.is_empty() || rule.keywords.iter().any(|k| lower.contains(k)))
        {
            continue;
        }
        for caps in rule.regex.captures_iter(text) {
            let Some(whole) = caps.get(0) else { continue };
            // A regex may consume the line break before its token; the
            // line is that of the token.
            let matched = whole.as_str();
            let start =
                whole.start() + matched.len() - matched.trim_start_matches(['\n', '\r']).len();
            let line = lines.line_of(start);
            if taken.contains_key(&line) {
                continue;
            }
            let candidate = Candidate {
                text,
                caps,
                line: lines.text(text, line),
            };
            let Some(secret) = (rule.check)(&candidate).and_then(|r| text.get(r)) else {
                continue;
            };
            if secret.to_ascii_lowercase().contains("example") {
                continue;
            }
            taken.insert(
                line,
                Hit {
                    rule,
                    line,
                    secret: secret.to_owned(),
                    marked: candidate.line.contains(ALLOW_MARKER),
                },
            );
        }
    }
    taken.into_values().collect()
}

/// Line starts of a text, to turn byte offsets into line indexes.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    fn text<'t>(&self, text: &'t str, line: usize) -> &'t str {
        let start = self.starts.get(line).copied().unwrap_or(text.len());
        let end = self
            .starts
            .get(line + 1)
            .map_or(text.len(), |&next| next - 1);
        text.get(start..end.max(start))
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// Shannon entropy of a string's characters, in bits per character.
pub(crate) fn entropy(s: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// True when `s` holds a run of `len` consecutive ascending or descending
/// characters (`abcdef`, `123456`, `987654`): a typed placeholder, not a
/// generated secret.
fn has_sequence(s: &str, len: usize) -> bool {
    let b = s.as_bytes();
    let mut up = 1;
    let mut down = 1;
    for w in b.windows(2) {
        up = if w[1] == w[0].wrapping_add(1) {
            up + 1
        } else {
            1
        };
        down = if w[1].wrapping_add(1) == w[0] {
            down + 1
        } else {
            1
        };
        if up >= len || down >= len {
            return true;
        }
    }
    false
}

/// A generated token: varied enough, and not a typed run.
fn random_looking(token: &str, min_entropy: f64) -> bool {
    entropy(token) >= min_entropy && !has_sequence(token, 6)
}

/// The token in group 1 (or the first group that matched), accepted when
/// its part after `skip` bytes looks generated.
fn token_after(c: &Candidate<'_>, skip: usize, min_entropy: f64) -> Option<Range<usize>> {
    let range = c.first_group()?;
    let body = c.text.get(range.start + skip..range.end)?;
    random_looking(body, min_entropy).then_some(range)
}

fn check_aws_key_id(c: &Candidate<'_>) -> Option<Range<usize>> {
    token_after(c, 4, 2.5)
}

fn check_token_3(c: &Candidate<'_>) -> Option<Range<usize>> {
    token_after(c, 0, 3.0)
}

fn check_token_35(c: &Candidate<'_>) -> Option<Range<usize>> {
    token_after(c, 0, 3.5)
}

fn check_huggingface(c: &Candidate<'_>) -> Option<Range<usize>> {
    let range = c.first_group()?;
    let body = c.text.get(range.start + 3..range.end)?;
    let mixed = body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase());
    (mixed && random_looking(body, 3.5)).then_some(range)
}

/// A run of PEM body characters.
static BASE64_RUN: LazyLock<Regex> = LazyLock::new(|| compile(r"[A-Za-z0-9+/]{40,}"));

/// A PEM header counts only with a key body after it: documentation that
/// shows the header with `...` below is not a key.
fn check_private_key(c: &Candidate<'_>) -> Option<Range<usize>> {
    let after = c.caps.get(0)?.end();
    let mut end = (after + 600).min(c.text.len());
    while !c.text.is_char_boundary(end) {
        end -= 1;
    }
    let window = c.text.get(after..end)?;
    let body = BASE64_RUN.find(window)?;
    Some(after + body.start()..after + body.end())
}

static GCP_TYPE: LazyLock<Regex> = LazyLock::new(|| compile(r#""type"\s*:\s*"service_account""#));

fn check_gcp(c: &Candidate<'_>) -> Option<Range<usize>> {
    if !GCP_TYPE.is_match(c.text) {
        return None;
    }
    let range = c.first_group()?;
    let body = BASE64_RUN.find(c.text.get(range.clone())?)?;
    Some(range.start + body.start()..range.start + body.end())
}

/// A JWT's header must decode to JSON naming its algorithm.
fn check_jwt(c: &Candidate<'_>) -> Option<Range<usize>> {
    let range = c.first_group()?;
    let token = c.text.get(range.clone())?;
    let header = token.split('.').next()?;
    let decoded = base64url_decode(header)?;
    let json = String::from_utf8_lossy(&decoded);
    json.contains("\"alg\"").then_some(range)
}

/// Decodes unpadded base64url; `None` on a character outside the alphabet.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Values that stand for a secret without being one.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    let lower = v.to_ascii_lowercase();
    if v.is_empty() {
        return true;
    }
    // References to somewhere else: `${VAR}`, `$VAR`, `%(x)s`, `{{ x }}`,
    // `<your-token>`, YAML tags and aliases, `[PAD]`-style tokens.
    if v.starts_with(['$', '%', '{', '<', '!', '&', '*', '[', '@', '(']) {
        return true;
    }
    const MARKERS: &[&str] = &[
        "{{",
        "${",
        "}}",
        "os.environ",
        "getenv",
        "process.env",
        "env(",
        "env.",
        "environ[",
        "vault:",
        "changeme",
        "change_me",
        "change-me",
        "change_this",
        "placeholder",
        "dummy",
        "redacted",
        "your_",
        "your-",
        "yourpass",
        "yoursecret",
        "yourtoken",
        "fixme",
        "todo",
        "xxxx",
        "****",
        "....",
        "<",
        ">",
        "secretkeyref",
        "not_a_real",
        "not-a-real",
        "notreal",
        "fake",
        "sample",
        "opensesame",
        // A value naming what it stands for (`my-db-secret`,
        // `supersecretpassword`) is a reference or a dummy.
        "secret",
        "password",
        "passwd",
        "token",
    ];
    if MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "none",
        "null",
        "nil",
        "true",
        "false",
        "undefined",
        "required",
        "optional",
        "string",
        "test",
        "testing",
        "admin",
        "root",
        "guest",
        "default",
        "empty",
        "unset",
        "hidden",
        "masked",
    ];
    if WORDS.contains(&lower.as_str()) {
        return true;
    }
    let mut chars = v.chars();
    let first = chars.next();
    chars.all(|c| Some(c) == first)
}

/// A literal assigned to a password-like key, in a configuration file.
fn check_generic(c: &Candidate<'_>) -> Option<Range<usize>> {
    let range = c.group(2).or_else(|| c.group(3)).or_else(|| c.group(4))?;
    let value = c.text.get(range.clone())?;
    if value.chars().count() < 8 || is_placeholder(value) {
        return None;
    }
    // Paths, URLs (see `url-password`), numbers and dotted references are
    // configuration, not secrets.
    if value.starts_with(['/', '.', '~']) || value.contains("://") {
        return None;
    }
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        value.bytes().any(|b| b.is_ascii_digit()),
        value
            .bytes()
            .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'-' | b'_' | b'.' | b' ')),
    ]
    .iter()
    .filter(|&&x| x)
    .count();
    (classes >= 2 && entropy(value) >= 2.5).then_some(range)
}

/// A password inside a URL: `postgres://user:<password>@host`.
fn check_url_password(c: &Candidate<'_>) -> Option<Range<usize>> {
    let user = c.text.get(c.group(1)?)?;
    let range = c.group(2)?;
    let password = c.text.get(range.clone())?;
    let host = c.text.get(c.group(3)?)?;
    let documented = [user, host]
        .iter()
        .any(|s| s.to_ascii_lowercase().contains("example"));
    let rejected = documented
        || password == user
        || password.chars().count() < 6
        || is_placeholder(password)
        || password.eq_ignore_ascii_case("pass")
        || password.eq_ignore_ascii_case("postgres");
    (!rejected).then_some(range)
}

/// Words on a line that mark a token as a hash, a checksum, a public key
/// or embedded data rather than a secret.
const NOT_SECRET_CONTEXT: &[&str] = &[
    "sha1",
    "sha256",
    "sha384",
    "sha512",
    "sha-",
    "md5",
    "checksum",
    "integrity",
    "hash",
    "digest",
    "base64,",
    "data:",
    "ssh-",
    "public",
    "commit",
    "revision",
    "etag",
    "nonce",
    "guid",
    "uuid",
    "websocket",
];

/// Words on a line that make a hex string a likely secret.
const SECRET_CONTEXT: &[&str] = &[
    "key",
    "secret",
    "token",
    "passw",
    "pwd",
    "auth",
    "credential",
    "api",
    "signature",
];

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
});

/// A quoted or assigned token that looks generated: high entropy for its
/// length and alphabet, and (for base64-like text) mixed case with digits
/// and without the shape of an identifier.
fn check_high_entropy(c: &Candidate<'_>) -> Option<Range<usize>> {
    let range = c.first_group()?;
    let token = c.text.get(range.clone())?;
    // Longer runs are embedded data (images in notebooks); `eyJ` starts
    // base64 JSON, which the `jwt` rule judges as a whole.
    if token.len() > 256 || UUID.is_match(token) || token.starts_with("eyJ") {
        return None;
    }
    let line = c.line.to_ascii_lowercase();
    if NOT_SECRET_CONTEXT.iter().any(|w| line.contains(w)) {
        return None;
    }
    let lower = token.to_ascii_lowercase();
    if ["test", "dummy", "fake", "sample", "mock"]
        .iter()
        .any(|w| lower.contains(w))
    {
        return None;
    }
    let body = token.trim_end_matches('=');
    if body.bytes().all(|b| b.is_ascii_hexdigit()) {
        let keyed = SECRET_CONTEXT.iter().any(|w| line.contains(w));
        return (body.len() >= 32 && keyed && random_looking(body, 3.0)).then_some(range);
    }
    let upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let digits = body.bytes().filter(u8::is_ascii_digit).count();
    // Random text over 62+ symbols reaches about log2(len) bits a
    // character; demand most of that, up to 4.5.
    let threshold = ((body.len() as f64).log2() - 0.7).min(4.5);
    let generated = upper
        && lower
        && digits >= 2
        && case_switch_ratio(body) >= 0.3
        && word_coverage(body) < 0.7
        && random_looking(body, threshold)
        && !encodes_placeholder(body);
    generated.then_some(range)
}

/// Whether base64 text decodes to readable text that is a placeholder
/// (`username:password`).
fn encodes_placeholder(body: &str) -> bool {
    base64url_decode(body)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .is_some_and(|text| {
            text.bytes().all(|b| (0x20..0x7f).contains(&b)) && is_placeholder(&text)
        })
}

/// Among adjacent letter pairs, the share that changes case: about one
/// half in random text, far less in `CamelCase` or `SCREAMING_CASE`.
fn case_switch_ratio(s: &str) -> f64 {
    let b = s.as_bytes();
    let (mut pairs, mut switches) = (0usize, 0usize);
    for w in b.windows(2) {
        if w[0].is_ascii_alphabetic() && w[1].is_ascii_alphabetic() {
            pairs += 1;
            if w[0].is_ascii_uppercase() != w[1].is_ascii_uppercase() {
                switches += 1;
            }
        }
    }
    if pairs == 0 {
        return 1.0;
    }
    switches as f64 / pairs as f64
}

/// The share of letters in word-like runs (a capital and two or more
/// lowercase letters, or four or more lowercase letters): high in
/// identifiers such as `Terminal256Formatter`, low in random text.
fn word_coverage(s: &str) -> f64 {
    let b = s.as_bytes();
    let letters = b.iter().filter(|c| c.is_ascii_alphabetic()).count();
    let mut covered = 0;
    let mut i = 0;
    while i < b.len() {
        let capital = b[i].is_ascii_uppercase();
        let run_start = if capital { i + 1 } else { i };
        let mut end = run_start;
        while end < b.len() && b[end].is_ascii_lowercase() {
            end += 1;
        }
        let run = end - run_start;
        if (capital && run >= 2) || (!capital && run >= 4) {
            covered += end - i;
        }
        i = if end > i { end } else { i + 1 };
    }
    if letters == 0 {
        return 0.0;
    }
    covered as f64 / letters as f64
}

fn compile(pattern: &str) -> Regex {
    // The patterns are constants of this module; a unit test compiles
    // every one of them.
    Regex::new(pattern).unwrap_or_else(|e| panic!("built-in pattern {pattern:?}: {e}"))
}

/// Builds the rule table. Order is priority: on a line, the first rule
/// that accepts a match is the one reported.
fn build_rules() -> Vec<Rule> {
    let rule = |id,
                description,
                keywords,
                scope,
                pattern: &str,
                check: fn(&Candidate<'_>) -> Option<Range<usize>>| Rule {
        id,
        description,
        keywords,
        scope,
        regex: compile(pattern),
        check,
    };
    vec![
        rule(
            "gcp-service-account-key",
            "Google Cloud service-account key file",
            &["service_account"],
            Scope::Any,
            r#""private_key"\s*:\s*"(-----BEGIN [A-Z ]*PRIVATE KEY-----[^"]*)""#,
            check_gcp,
        ),
        rule(
            "private-key",
            "PEM or OpenSSH private key",
            &["private key"],
            Scope::Any,
            r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP|SSH2 ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----",
            check_private_key,
        ),
        rule(
            "aws-access-key-id",
            "AWS access key id",
            &["akia", "asia", "abia", "acca"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?:$|[^A-Za-z0-9])",
            check_aws_key_id,
        ),
        rule(
            "aws-secret-access-key",
            "AWS secret access key",
            &["aws"],
            Scope::Any,
            r#"(?im)aws_?secret_?(?:access_?)?key["']?\s*[:=]>?\s*["']?([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])"#,
            check_token_35,
        ),
        rule(
            "github-token",
            "GitHub personal access, OAuth or app token",
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})(?:$|[^A-Za-z0-9_])",
            check_token_3,
        ),
        rule(
            "gitlab-token",
            "GitLab personal access token",
            &["glpat-"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(glpat-[A-Za-z0-9_-]{20,})",
            check_token_3,
        ),
        rule(
            "slack-token",
            "Slack bot, user or app token",
            &["xox"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(xox[baprs]-[0-9]{8,}-[A-Za-z0-9-]{8,})",
            check_token_3,
        ),
        rule(
            "slack-webhook",
            "Slack incoming-webhook URL",
            &["hooks.slack.com"],
            Scope::Any,
            r"https://hooks\.slack\.com/services/(T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{24})",
            check_token_3,
        ),
        rule(
            "stripe-secret-key",
            "Stripe live secret or restricted key",
            &["_live_"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_])((?:sk|rk)_live_[A-Za-z0-9]{24,})",
            check_token_3,
        ),
        rule(
            "google-api-key",
            "Google API key",
            &["aiza"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(AIza[A-Za-z0-9_-]{35})(?:$|[^A-Za-z0-9_-])",
            check_token_3,
        ),
        rule(
            "openai-api-key",
            "OpenAI API key",
            &["t3blbkfj", "sk-proj-", "sk-svcacct-", "sk-admin-"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,})",
            check_token_35,
        ),
        rule(
            "anthropic-api-key",
            "Anthropic API key",
            &["sk-ant-"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,})",
            check_token_35,
        ),
        rule(
            "huggingface-token",
            "Hugging Face access token",
            &["hf_"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_])(hf_[A-Za-z]{34})(?:$|[^A-Za-z0-9_])",
            check_huggingface,
        ),
        rule(
            "pypi-token",
            "PyPI upload token",
            &["pypi-ageichlwas5vcmc"],
            Scope::Any,
            r"(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})",
            check_token_35,
        ),
        rule(
            "npm-token",
            "npm access token",
            &["npm_"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_])(npm_[A-Za-z0-9]{36})(?:$|[^A-Za-z0-9_])",
            check_token_3,
        ),
        rule(
            "jwt",
            "JSON Web Token",
            &["eyj"],
            Scope::Any,
            r"(?:^|[^A-Za-z0-9_-])(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})",
            check_jwt,
        ),
        rule(
            "url-password",
            "password embedded in a URL",
            &["://"],
            Scope::Any,
            r#"(?:^|[^A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{1,20}://([^\s:/?#@'"`]{1,128}):([^\s:/?#@'"`]{1,256})@([A-Za-z0-9._\[\]-]+)"#,
            check_url_password,
        ),
        rule(
            "generic-password",
            "password, secret or token literal in a configuration file",
            &["pass", "pwd", "secret", "token", "key"],
            Scope::Config,
            r#"(?imR)(?:^|[{,])[ \t]*(?:-[ \t]+)?(?:export[ \t]+)?["']?([A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_.-]?key|apikey|secret[_.-]?key|access[_.-]?key|private[_.-]?key|auth[_.-]?key))["']?[ \t]*[:=][ \t]*(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s"'#;,]+))"#,
            check_generic,
        ),
        rule(
            "high-entropy-string",
            "high-entropy string that looks like a generated secret",
            &[],
            Scope::NotLockfile,
            r#"(?mR)(?:["'`]([A-Za-z0-9+/_-]{20,}={0,2})["'`]|[=:][ \t]*([A-Za-z0-9+/_-]{20,}={0,2})[ \t]*(?:[,;]|$))"#,
            check_high_entropy,
        ),
    ]
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(build_rules);

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_pattern_compiles_and_ids_are_unique() {
        let ids: BTreeSet<&str> = rules().iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), rules().len());
        LazyLock::force(&BASE64_RUN);
        LazyLock::force(&GCP_TYPE);
        LazyLock::force(&UUID);
    }

    #[test]
    fn entropy_of_simple_strings() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abab") - 1.0).abs() < 1e-9);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn sequences_are_placeholders() {
        assert!(has_sequence("x123456y", 6));
        assert!(has_sequence("zyxwvu", 6));
        assert!(!has_sequence("q7Zp2LmX9vKd", 6));
    }

    #[test]
    fn identifiers_do_not_look_generated() {
        for id in [
            "Terminal256Formatter",
            "x500UniqueIdentifier",
            "Cryptography_HAS_ED448",
        ] {
            assert!(
                case_switch_ratio(id) < 0.3 || word_coverage(id) >= 0.7,
                "{id}"
            );
        }
        let random = "MxXy9b4Bzw";
        assert!(case_switch_ratio(random) >= 0.3 && word_coverage(random) < 0.7);
        assert!((word_coverage("Formatter") - 1.0).abs() < 1e-9);
        assert_eq!(word_coverage("ABCDEF12"), 0.0);
    }

    #[test]
    fn base64url_decodes_a_jwt_header() {
        let decoded = base64url_decode("eyJhbGciOiJIUzI1NiJ9").unwrap();
        assert_eq!(decoded, br#"{"alg":"HS256"}"#);
        assert!(base64url_decode("not base64!").is_none());
    }

    #[test]
    fn line_index_maps_offsets() {
        let text = "a\nbc\r\n\nd";
        let index = LineIndex::new(text);
        assert_eq!(index.line_of(0), 0);
        assert_eq!(index.line_of(2), 1);
        assert_eq!(index.text(text, 1), "bc");
        assert_eq!(index.line_of(6), 2);
        assert_eq!(index.text(text, 2), "");
        assert_eq!(index.text(text, 3), "d");
    }
}
