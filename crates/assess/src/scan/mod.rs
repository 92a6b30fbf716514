//! Static evidence: what the repository's files show.
//!
//! [`scan`] walks the tree (leaving out version-control, build, cache,
//! virtual-environment and git-ignored directories), classifies every file by
//! its path, reads only the files that may hold evidence, and returns the
//! [`Evidence`] they show together with the commands that run without a
//! person ([`AutomatedCommand`]: CI job steps and `mlops.toml` pipeline
//! steps). Evidence that a tool runs — a test file, a training script — is
//! then *linked*: it becomes automated when one of those commands runs it
//! (see the `link` module).
//!
//! It reads files and nothing else: no scoring ([`crate::score`]), no run
//! history ([`crate::runs`]), no secret detection (the CI stage's secret
//! scan). No file's content makes it fail: an unreadable or malformed file
//! becomes a note.

mod ci;
mod code;
mod commands;
mod config;
mod expand;
mod files;
mod link;
mod manifest;
mod text;
mod walk;
mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::evidence::{AutomatedCommand, Evidence, Signal, Source};

use self::files::Kind;

/// Files larger than this are not read.
const MAX_READ: u64 = 1024 * 1024;

/// What the repository's files show.
#[derive(Debug, Clone, Default)]
pub struct StaticScan {
    /// Files walked (after skipping ignored and vendored directories).
    pub files: usize,
    /// Evidence, ordered by path, then line; ids left empty.
    pub evidence: Vec<Evidence>,
    /// Commands that run without a person: CI job steps and `mlops.toml`
    /// pipeline steps, ordered by path, then line.
    pub automation: Vec<AutomatedCommand>,
    /// `[project] name` from `mlops.toml`, if readable.
    pub project_name: Option<String>,
    /// Whether `mlops.toml` exists at the root.
    pub manifest: bool,
    /// Caveats: unreadable files, malformed `mlops.toml` or CI files
    /// (`file:line: message`), files too large to read.
    pub notes: Vec<String>,
}

/// Why the tree could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The directory does not exist.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The directory given.
        path: PathBuf,
    },
    /// The path is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory could not be read.
    #[error("cannot read directory {}", path.display())]
    Unreadable {
        /// The directory given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Scans the tree at `root`.
pub fn scan(root: &Path) -> Result<StaticScan, ScanError> {
    let meta = fs::metadata(root).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ScanError::Missing {
            path: root.to_path_buf(),
        },
        _ => ScanError::Unreadable {
            path: root.to_path_buf(),
            source,
        },
    })?;
    if !meta.is_dir() {
        return Err(ScanError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let walked = walk::walk(root)?;
    let mut out = Collector {
        notes: walked.notes,
        ..Collector::default()
    };
    let mut manifest = false;
    let mut project_name = None;
    for file in &walked.files {
        let name = file.rel.rsplit('/').next().unwrap_or(&file.rel);
        let Some(kind) = files::classify(&file.rel, name) else {
            continue;
        };
        if kind == Kind::Manifest {
            manifest = true;
        }
        if !kind.is_read() {
            config::unread(&file.rel, name, kind, &mut out);
            continue;
        }
        let Some((text, utf8)) = out.read(file) else {
            if kind == Kind::Notebook {
                config::unread(&file.rel, name, kind, &mut out);
            }
            // A lockfile pins the environment whatever its size (uv and
            // conda lockfiles of ML projects often pass 1 MiB).
            if matches!(kind, Kind::Lockfile(_)) && file.len > MAX_READ {
                out.push(
                    Evidence::file(
                        Signal::LockedEnvironment,
                        file.rel.clone(),
                        None,
                        format!(
                            "{} pins the environment ({:.1} MiB, too large to count its packages)",
                            file.rel,
                            file.len as f64 / (1024.0 * 1024.0)
                        ),
                    )
                    .automated(),
                );
            }
            continue;
        };
        let ctx = FileCtx {
            rel: &file.rel,
            name,
        };
        match kind {
            // TOML is UTF-8: mlops would not read this manifest.
            Kind::Manifest if !utf8 => out.notes.push(format!("{}: not valid UTF-8", file.rel)),
            Kind::Manifest => project_name = manifest::scan(&text, &mut out),
            Kind::Python => code::python(&ctx, &text, &mut out),
            Kind::Notebook => code::notebook(&ctx, &text, &mut out),
            Kind::R => code::r(&ctx, &text, &mut out),
            Kind::Rust => code::rust(&ctx, &text, &mut out),
            Kind::Script => code::script(&ctx, &text, &mut out),
            Kind::Ci(system) => ci::scan(&ctx, system, &text, &mut out),
            Kind::Yaml if ci::is_azure_pipeline(&text) => {
                ci::scan(&ctx, files::CiSystem::AzurePipelines, &text, &mut out);
            }
            _ => config::read(&ctx, kind, &text, &mut out),
        }
    }
    out.finish_tree(root);
    Ok(out.into_scan(walked.files.len(), manifest, project_name))
}

/// The file being looked at.
struct FileCtx<'a> {
    /// Relative to the root, `/`-separated.
    rel: &'a str,
    /// Its file name.
    name: &'a str,
}

impl FileCtx<'_> {
    /// Its directory, relative to the root (`""` at the root).
    fn dir(&self) -> &str {
        self.rel.rsplit_once('/').map_or("", |(dir, _)| dir)
    }
}

/// Where an automated command comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// A CI system's job step.
    Ci,
    /// A step of `mlops.toml`: its `run` command, or the command of a
    /// built-in `kind`.
    Mlops,
}

/// An automated command with what the scan knows about how it runs.
#[derive(Debug, Clone)]
struct CommandRecord {
    /// As reported.
    command: AutomatedCommand,
    /// Where from.
    origin: Origin,
    /// Whether it runs on a schedule, perhaps among other triggers.
    on_schedule: bool,
}

/// A make target.
#[derive(Debug, Clone, Default)]
struct MakeTarget {
    /// The makefile defining it.
    file: String,
    /// Targets it depends on.
    prerequisites: Vec<String>,
    /// Its recipe lines, with their line numbers.
    recipe: Vec<(usize, String)>,
}

/// A command line that runs without a person: an automated command, or a
/// line of a script or make recipe one runs.
#[derive(Debug, Clone)]
struct Invocation {
    /// The CI system or `mlops`.
    system: String,
    /// The command line.
    text: String,
    /// Where the line is written.
    source: Source,
    /// The automated command that runs it, when it is a line of a script
    /// or recipe.
    via: Option<Source>,
    /// Where the automated command comes from.
    origin: Origin,
    /// Whether it runs on a schedule, perhaps among other triggers.
    on_schedule: bool,
}

impl Invocation {
    /// Where it is written, and through what: `deploy.sh:3 via ci.yml:12`.
    fn describe(&self) -> String {
        match &self.via {
            Some(via) => format!("{} via {}", self.source.describe(), via.describe()),
            None => self.source.describe(),
        }
    }
}

/// Everything found so far.
#[derive(Default)]
struct Collector {
    /// Evidence, in the order found.
    evidence: Vec<Evidence>,
    /// Commands of CI files and `mlops.toml`, in the order found.
    commands: Vec<CommandRecord>,
    /// Texts that automated steps refer to without running them as a
    /// command: the parameters of `kind` steps.
    references: Vec<link::Target>,
    /// Caveats for [`StaticScan::notes`].
    notes: Vec<String>,
    /// Targets of the makefiles.
    make_targets: HashMap<String, MakeTarget>,
    /// Shell scripts: their command lines, by path.
    scripts: HashMap<String, Vec<(usize, String)>>,
    /// Directories holding data files, and data file stems as `dir/stem`.
    data_dirs: HashSet<String>,
    data_stems: HashSet<String>,
    /// Schema files (`*.schema.toml`, `*.schema.json`, `schema.json`).
    schema_files: Vec<String>,
    /// `[package] name` of each Cargo.toml, by directory.
    cargo_packages: HashMap<String, String>,
    /// Indices into `evidence` of Rust training code, to be given the
    /// crate's name as a `run_by` word.
    rust_training: Vec<usize>,
    /// Each `dvc.yaml`: its directory, its path, its `params:` line.
    dvc_pipelines: Vec<(String, String, Option<usize>)>,
    /// Directories holding a `params.yaml`.
    params_dirs: HashSet<String>,
    /// Smoke request files named by `smoke` steps, with the step.
    smoke_files: Vec<(String, Source)>,
    /// Terraform files by directory.
    terraform: BTreeMap<String, Vec<String>>,
    /// Files not read for their size.
    too_large: Vec<String>,
}

impl Collector {
    /// Adds evidence.
    fn push(&mut self, evidence: Evidence) {
        self.evidence.push(evidence);
    }

    /// Adds an automated command.
    fn command(&mut self, command: AutomatedCommand, origin: Origin, on_schedule: bool) {
        self.commands.push(CommandRecord {
            command,
            origin,
            on_schedule,
        });
    }

    /// Reads a file the scan wants, or notes why not; with whether it was
    /// valid UTF-8. Binary files read as nothing; invalid UTF-8 is
    /// replaced.
    fn read(&mut self, file: &walk::WalkedFile) -> Option<(String, bool)> {
        if file.len > MAX_READ {
            self.too_large.push(file.rel.clone());
            return None;
        }
        let mut bytes = Vec::with_capacity(usize::try_from(file.len).unwrap_or(0));
        let read =
            fs::File::open(&file.path).and_then(|f| f.take(MAX_READ + 1).read_to_end(&mut bytes));
        if let Err(err) = read {
            self.notes.push(format!("{}: not read: {err}", file.rel));
            return None;
        }
        if bytes[..bytes.len().min(8192)].contains(&0) {
            return None;
        }
        Some(match String::from_utf8(bytes) {
            Ok(text) => (text, true),
            Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), false),
        })
    }

    /// What needs the whole tree: schemas beside data, DVC parameters, the
    /// crates of Rust training code, smoke files, Terraform modules.
    fn finish_tree(&mut self, root: &Path) {
        for schema in std::mem::take(&mut self.schema_files) {
            let (dir, name) = schema.rsplit_once('/').unwrap_or(("", &schema));
            let stem = name.split('.').next().unwrap_or(name);
            let beside_data =
                self.data_dirs.contains(dir) || self.data_stems.contains(&format!("{dir}/{stem}"));
            if beside_data {
                self.push(
                    Evidence::file(
                        Signal::DataTests,
                        schema.clone(),
                        None,
                        format!("{schema}: a schema for the data beside it"),
                    )
                    .run_by([schema.clone()]),
                );
            }
        }
        for (dir, file, params_line) in std::mem::take(&mut self.dvc_pipelines) {
            if params_line.is_some() || self.params_dirs.contains(&dir) {
                self.push(
                    Evidence::file(
                        Signal::ExperimentTracking,
                        file.clone(),
                        params_line,
                        format!("{file}: DVC tracks the pipeline's parameters"),
                    )
                    .run_by(["dvc repro", "dvc exp run"]),
                );
            }
        }
        for index in std::mem::take(&mut self.rust_training) {
            let Some(Source::File { path, .. }) = self.evidence.get(index).map(|e| &e.source)
            else {
                continue;
            };
            if let Some(package) = nearest_package(path, &self.cargo_packages) {
                let word = format!("{package} train");
                self.evidence[index].run_by.push(word);
            }
        }
        for (path, step) in std::mem::take(&mut self.smoke_files) {
            config::smoke_file(root, &path, &step, self);
        }
        for (dir, tf) in std::mem::take(&mut self.terraform) {
            let first = tf[0].clone();
            let shown = if dir.is_empty() {
                "the root"
            } else {
                dir.as_str()
            };
            self.push(
                Evidence::file(
                    Signal::InfrastructureCode,
                    first.clone(),
                    None,
                    format!("{first}: Terraform in {shown} ({} .tf files)", tf.len()),
                )
                .automated(),
            );
        }
        if !self.too_large.is_empty() {
            let shown: Vec<&str> = self.too_large.iter().take(5).map(String::as_str).collect();
            let more = if self.too_large.len() > 5 {
                ", …"
            } else {
                ""
            };
            self.notes.push(format!(
                "{} files larger than 1 MiB were not read: {}{more}",
                self.too_large.len(),
                shown.join(", ")
            ));
        }
    }

    /// Evidence from the commands, linking, ordering.
    fn into_scan(
        mut self,
        files: usize,
        manifest: bool,
        project_name: Option<String>,
    ) -> StaticScan {
        self.commands
            .sort_by(|a, b| source_key(&a.command.source).cmp(&source_key(&b.command.source)));
        let mut invocations: Vec<Invocation> = self
            .commands
            .iter()
            .map(|c| Invocation {
                system: c.command.system.clone(),
                text: c.command.command.clone(),
                source: c.command.source.clone(),
                via: None,
                origin: c.origin.clone(),
                on_schedule: c.on_schedule,
            })
            .collect();
        let indirect = expand::indirect(&invocations, &self.scripts, &self.make_targets);
        invocations.extend(indirect);
        self.evidence.extend(commands::evidence(&invocations));
        let mut targets: Vec<link::Target> = invocations
            .iter()
            .filter_map(|i| link::Target::new(&i.text, i.source.clone(), i.describe()))
            .collect();
        targets.append(&mut self.references);
        let pipelines = link::link(&mut self.evidence, &targets);
        for pipeline in pipelines {
            let known = self
                .evidence
                .iter()
                .any(|e| e.signal == pipeline.signal && e.source == pipeline.source);
            if !known {
                self.evidence.push(pipeline);
            }
        }

        self.evidence.sort_by(|a, b| {
            source_key(&a.source)
                .cmp(&source_key(&b.source))
                .then(a.signal.cmp(&b.signal))
                .then(b.automated.cmp(&a.automated))
                .then(a.summary.cmp(&b.summary))
        });
        self.evidence
            .dedup_by(|b, a| a.signal == b.signal && a.source == b.source);
        StaticScan {
            files,
            evidence: self.evidence,
            automation: self.commands.into_iter().map(|c| c.command).collect(),
            project_name,
            manifest,
            notes: self.notes,
        }
    }
}

fn source_key(source: &Source) -> (&str, usize) {
    match source {
        Source::File { path, line } => (path.as_str(), line.unwrap_or(0)),
        _ => ("", 0),
    }
}

/// The package of the nearest Cargo.toml above `path`.
fn nearest_package<'a>(path: &str, packages: &'a HashMap<String, String>) -> Option<&'a str> {
    let mut dir = path;
    loop {
        dir = match dir.rsplit_once('/') {
            Some((parent, _)) => parent,
            None if dir.is_empty() => return None,
            None => "",
        };
        if let Some(package) = packages.get(dir) {
            return Some(package);
        }
        if dir.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests;
