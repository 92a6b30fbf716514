//! The validated pipeline: steps grouped into stages, and the gated DAG that
//! orders them.
//!
//! Both front ends — the manifest compiler and Rust code embedding the engine
//! — build a [`Pipeline`] through [`Pipeline::new`], so every rule is checked
//! in one place. The graph has one gate node per stage: the gate of stage N
//! depends on every step of N, and every step of stage N+1 depends on it. This
//! module does not run anything; see [`crate::exec`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::kind::{StepAction, StepContext, StepFailure};
use crate::section::SectionRead;
use crate::stage::Stage;

/// What a step does.
#[derive(Clone)]
pub enum Action {
    /// A command run by `/bin/sh -c` in its own process group.
    Shell {
        /// The command line.
        command: String,
    },
    /// Work done in-process: a built-in kind or a closure given in code.
    Task {
        /// The kind's name, or a label for a closure.
        kind: String,
        /// Canonical text of the parameters; part of the step fingerprint,
        /// since a closure itself cannot be hashed.
        params: String,
        /// The work.
        action: Arc<dyn StepAction>,
    },
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Shell { command } => f.debug_struct("Shell").field("command", command).finish(),
            Action::Task { kind, params, .. } => f
                .debug_struct("Task")
                .field("kind", kind)
                .field("params", params)
                .finish_non_exhaustive(),
        }
    }
}

/// The default initial delay between retries; it doubles on each retry.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The longest delay between two attempts, however many retries.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// One step of a pipeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique name within the project: letters, digits, `-`, `_`.
    pub name: String,
    /// The stage the step belongs to.
    pub stage: Stage,
    /// What the step does.
    pub action: Action,
    /// Working directory relative to the project root (default: the root).
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Longest an attempt may run before its process group is killed.
    pub timeout: Option<Duration>,
    /// How many times a failed or timed-out attempt is retried.
    pub retries: u32,
    /// Delay before the first retry; doubles each retry, capped at
    /// [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
    /// Steps, in this or earlier stages, that must pass first.
    pub depends_on: Vec<String>,
    /// Glob patterns, relative to the project root, of the files the step
    /// reads. A step with inputs is skipped when nothing changed.
    pub inputs: Vec<String>,
    /// Paths, relative to the project root, the step must produce.
    pub outputs: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// The parts of manifest sections the step's kind read when it was
    /// compiled (`[infra.environment]`), with their digests: part of its
    /// definition, so an edit of what a kind reads reruns the step and
    /// voids its evidence.
    pub reads: Vec<SectionRead>,
}

impl Step {
    fn new(name: impl Into<String>, stage: Stage, action: Action) -> Self {
        Step {
            name: name.into(),
            stage,
            action,
            cwd: None,
            env: BTreeMap::new(),
            timeout: None,
            retries: 0,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            depends_on: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            description: None,
            reads: Vec::new(),
        }
    }

    /// A step running `command` through `/bin/sh -c`.
    pub fn shell(name: impl Into<String>, stage: Stage, command: impl Into<String>) -> Self {
        Step::new(
            name,
            stage,
            Action::Shell {
                command: command.into(),
            },
        )
    }

    /// A step running an in-process async closure. `label` names the work in
    /// plans and fingerprints; change it when the closure's behaviour changes,
    /// or caching (which needs `inputs`) would treat old results as current.
    pub fn task<F, Fut>(
        name: impl Into<String>,
        stage: Stage,
        label: impl Into<String>,
        work: F,
    ) -> Self
    where
        F: Fn(StepContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), StepFailure>> + Send + 'static,
    {
        Step::new(
            name,
            stage,
            Action::Task {
                kind: label.into(),
                params: String::new(),
                action: Arc::new(work),
            },
        )
    }

    /// Adds dependencies.
    pub fn depends_on<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.depends_on.extend(deps.into_iter().map(Into::into));
        self
    }

    /// Sets the timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the number of retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets the initial retry delay.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Adds input globs.
    pub fn inputs<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inputs.extend(globs.into_iter().map(Into::into));
        self
    }

    /// Adds output paths.
    pub fn outputs<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.outputs.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory, relative to the project root.
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// The delay before retry number `retry` (1-based).
    pub fn backoff_before(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.retry_backoff
            .checked_mul(factor)
            .unwrap_or(MAX_RETRY_BACKOFF)
            .min(MAX_RETRY_BACKOFF)
    }

    /// Declares parts of the manifest an in-process step depends on (set by
    /// the manifest compiler for kinds; embedders may set their own).
    pub fn reads(mut self, reads: impl IntoIterator<Item = SectionRead>) -> Self {
        self.reads.extend(reads);
        self.reads.sort();
        self.reads.dedup();
        self
    }

    /// A hash of everything that defines what the step does: action, working
    /// directory, environment, input patterns, outputs and the manifest
    /// parts its kind read. Timeouts and retries are left out: they do not
    /// change a passing result.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |tag: &str, value: &str| {
            h.update(tag.as_bytes());
            h.update(&(value.len() as u64).to_le_bytes());
            h.update(value.as_bytes());
        };
        match &self.action {
            Action::Shell { command } => field("shell", command),
            Action::Task { kind, params, .. } => {
                field("kind", kind);
                field("params", params);
            }
        }
        field(
            "cwd",
            &self
                .cwd
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for (k, v) in &self.env {
            field("env-key", k);
            field("env-value", v);
        }
        for i in &self.inputs {
            field("input", i);
        }
        for o in &self.outputs {
            field("output", o);
        }
        // Sorted here too: `reads` is a public field an embedder may fill
        // in any order.
        let mut reads: Vec<&SectionRead> = self.reads.iter().collect();
        reads.sort();
        reads.dedup();
        for r in reads {
            field("read", &r.section);
            field("read-digest", &r.digest);
        }
        h.finalize().to_hex().to_string()
    }

    /// A one-line description of the action, for plans and logs.
    pub fn describe_action(&self) -> String {
        match &self.action {
            Action::Shell { command } => command.clone(),
            Action::Task { kind, .. } => format!("kind = {kind}"),
        }
    }
}

/// A rule a set of steps breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline has no steps.
    #[error("the pipeline has no steps; add a step to the `iac` stage")]
    Empty,
    /// A step name with characters outside `[A-Za-z0-9_-]`.
    #[error("step name `{step}` may contain only letters, digits, `-` and `_`")]
    InvalidName {
        /// The name.
        step: String,
    },
    /// Two steps share a name.
    #[error("step `{step}` is defined twice (in stage `{first}` and in stage `{second}`)")]
    DuplicateStep {
        /// The name.
        step: String,
        /// Stage of the first definition.
        first: Stage,
        /// Stage of the second definition.
        second: Stage,
    },
    /// A dependency names no step.
    #[error("step `{step}` depends on `{dependency}`, which is not a step{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownDependency {
        /// The dependent step.
        step: String,
        /// The missing name.
        dependency: String,
        /// A close existing name.
        suggestion: Option<String>,
    },
    /// A dependency on a step of a later stage.
    #[error(
        "step `{step}` in stage `{stage}` depends on `{dependency}` in the later stage `{dependency_stage}`; a stage may depend only on its own and earlier stages"
    )]
    LaterStageDependency {
        /// The dependent step.
        step: String,
        /// Its stage.
        stage: Stage,
        /// The dependency.
        dependency: String,
        /// The dependency's stage.
        dependency_stage: Stage,
    },
    /// A step depends on itself.
    #[error("step `{step}` depends on itself")]
    SelfDependency {
        /// The step.
        step: String,
    },
    /// A dependency cycle; `path` starts and ends with the same step.
    #[error("dependency cycle: {}", path.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The steps of the cycle in order, the first repeated at the end.
        path: Vec<String>,
    },
    /// A stage is used while an earlier stage is absent.
    #[error(
        "stage `{stage}` is enabled but the earlier stage `{missing}` is missing; stages are climbed in order: iac, ci, cd, release, apm, loadtest"
    )]
    MissingStage {
        /// The enabled stage.
        stage: Stage,
        /// The absent earlier stage.
        missing: Stage,
    },
    /// A step's stage is not among the declared stages.
    #[error("step `{step}` is in stage `{stage}`, which the pipeline does not enable")]
    UndeclaredStage {
        /// The step.
        step: String,
        /// Its stage.
        stage: Stage,
    },
    /// A stage is declared without steps.
    #[error(
        "stage `{stage}` has no steps; a stage passes only on evidence, so give it at least one step or remove it"
    )]
    EmptyStage {
        /// The stage.
        stage: Stage,
    },
}

/// A node of the pipeline graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// The step with this index in [`Pipeline::steps`].
    Step(usize),
    /// The gate closing this stage.
    Gate(Stage),
}

/// A validated pipeline and its gated DAG. Cloning is cheap: clones share
/// the steps and the graph, which never change after [`Pipeline::new`].
#[derive(Debug, Clone)]
pub struct Pipeline(Arc<Validated>);

/// What [`Pipeline::new`] validated and built.
#[derive(Debug)]
struct Validated {
    project: String,
    steps: Vec<Step>,
    stages: Vec<Stage>,
    graph: DiGraph<Node, ()>,
    step_nodes: Vec<NodeIndex>,
    gate_nodes: BTreeMap<Stage, NodeIndex>,
    by_name: HashMap<String, usize>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Pipeline {
    /// Validates the steps and builds the graph. `declared_stages` are the
    /// stages the project enables (a manifest may declare a stage with no
    /// steps, which is an error); pass `None` to take the stages of the steps.
    /// Reports every broken rule, not just the first.
    pub fn new(
        project: impl Into<String>,
        steps: Vec<Step>,
        declared_stages: Option<&[Stage]>,
    ) -> Result<Pipeline, Vec<PipelineError>> {
        let mut errors = Vec::new();
        let mut stages: Vec<Stage> = match declared_stages {
            Some(s) => s.to_vec(),
            None => steps.iter().map(|s| s.stage).collect(),
        };
        stages.sort();
        stages.dedup();

        if steps.is_empty() && stages.is_empty() {
            errors.push(PipelineError::Empty);
        }
        for &stage in &stages {
            if !steps.iter().any(|s| s.stage == stage) {
                errors.push(PipelineError::EmptyStage { stage });
            }
        }
        let mut undeclared: Vec<&Step> = steps
            .iter()
            .filter(|s| !stages.contains(&s.stage))
            .collect();
        undeclared.dedup_by_key(|s| s.stage);
        for step in undeclared {
            errors.push(PipelineError::UndeclaredStage {
                step: step.name.clone(),
                stage: step.stage,
            });
        }
        for &stage in &stages {
            let mut earlier = stage.previous();
            while let Some(e) = earlier {
                if !stages.contains(&e) {
                    errors.push(PipelineError::MissingStage { stage, missing: e });
                    break;
                }
                earlier = e.previous();
            }
        }

        let mut by_name: HashMap<String, usize> = HashMap::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            if !valid_name(&step.name) {
                errors.push(PipelineError::InvalidName {
                    step: step.name.clone(),
                });
            }
            if let Some(&first) = by_name.get(&step.name) {
                errors.push(PipelineError::DuplicateStep {
                    step: step.name.clone(),
                    first: steps[first].stage,
                    second: step.stage,
                });
            } else {
                by_name.insert(step.name.clone(), i);
            }
        }

        let mut graph = DiGraph::with_capacity(steps.len() + stages.len(), steps.len() * 2);
        let step_nodes: Vec<NodeIndex> = (0..steps.len())
            .map(|i| graph.add_node(Node::Step(i)))
            .collect();
        let gate_nodes: BTreeMap<Stage, NodeIndex> = stages
            .iter()
            .map(|&s| (s, graph.add_node(Node::Gate(s))))
            .collect();

        // Dependency edges among steps; checked here, cycles below.
        let mut dependency_graph = DiGraph::<usize, ()>::with_capacity(steps.len(), steps.len());
        for i in 0..steps.len() {
            dependency_graph.add_node(i);
        }
        // `update_edge` would scan a node's edges on every insert: quadratic
        // for a wide fan-out. A set of seen pairs keeps it linear.
        let mut seen_edges = std::collections::HashSet::new();
        for (i, step) in steps.iter().enumerate() {
            for dep in &step.depends_on {
                let Some(&j) = by_name.get(dep) else {
                    let suggestion = steps
                        .iter()
                        .map(|s| s.name.as_str())
                        .filter(|n| strsim::damerau_levenshtein(n, dep) <= 2)
                        .min_by_key(|n| strsim::damerau_levenshtein(n, dep))
                        .map(str::to_owned);
                    errors.push(PipelineError::UnknownDependency {
                        step: step.name.clone(),
                        dependency: dep.clone(),
                        suggestion,
                    });
                    continue;
                };
                if j == i {
                    errors.push(PipelineError::SelfDependency {
                        step: step.name.clone(),
                    });
                    continue;
                }
                if steps[j].stage > step.stage {
                    errors.push(PipelineError::LaterStageDependency {
                        step: step.name.clone(),
                        stage: step.stage,
                        dependency: dep.clone(),
                        dependency_stage: steps[j].stage,
                    });
                    continue;
                }
                if !seen_edges.insert((j, i)) {
                    // `depends-on = ["a", "a"]`: one edge is enough.
                    continue;
                }
                dependency_graph.add_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                graph.add_edge(step_nodes[j], step_nodes[i], ());
            }
        }
        for scc in tarjan_scc(&dependency_graph) {
            if scc.len() > 1 {
                errors.push(PipelineError::Cycle {
                    path: cycle_path(&dependency_graph, &scc)
                        .into_iter()
                        .map(|n| steps[dependency_graph[n]].name.clone())
                        .collect(),
                });
            }
        }

        // Gate edges: stage steps -> gate(stage) -> steps of the next stage.
        for (i, step) in steps.iter().enumerate() {
            if let Some(&gate) = gate_nodes.get(&step.stage) {
                graph.add_edge(step_nodes[i], gate, ());
            }
            if let Some(prev) = step.stage.previous()
                && let Some(&gate) = gate_nodes.get(&prev)
            {
                graph.add_edge(gate, step_nodes[i], ());
            }
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Pipeline(Arc::new(Validated {
            project: project.into(),
            steps,
            stages,
            graph,
            step_nodes,
            gate_nodes,
            by_name,
        })))
    }

    /// The project's name.
    pub fn project(&self) -> &str {
        &self.0.project
    }

    /// The steps, in declaration order.
    pub fn steps(&self) -> &[Step] {
        &self.0.steps
    }

    /// The enabled stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.0.stages
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.0.by_name.get(name).map(|&i| &self.0.steps[i])
    }

    /// The index of the step with this name.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.0.by_name.get(name).copied()
    }

    /// The steps of one stage, in declaration order.
    pub fn stage_steps(&self, stage: Stage) -> impl Iterator<Item = (usize, &Step)> {
        self.0
            .steps
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.stage == stage)
    }

    /// The gated DAG. Edges point from a prerequisite to what waits on it.
    pub fn graph(&self) -> &DiGraph<Node, ()> {
        &self.0.graph
    }

    /// The graph node of a step.
    pub fn step_node(&self, index: usize) -> NodeIndex {
        self.0.step_nodes[index]
    }

    /// The graph node of a stage's gate.
    pub fn gate_node(&self, stage: Stage) -> Option<NodeIndex> {
        self.0.gate_nodes.get(&stage).copied()
    }

    /// Steps in an order that respects every edge: stage by stage, and within
    /// a stage dependencies first, otherwise in declaration order.
    pub fn ordered_steps(&self) -> Vec<usize> {
        // Kahn's algorithm over the step graph, picking the lowest index
        // among ready steps so the order is stable and readable.
        let n = self.0.steps.len();
        let mut indegree = vec![0usize; n];
        for (i, &node) in self.0.step_nodes.iter().enumerate() {
            indegree[i] = self
                .0
                .graph
                .edges_directed(node, petgraph::Direction::Incoming)
                .filter(|e| matches!(self.0.graph[e.source()], Node::Step(_)))
                .count();
        }
        let mut order = Vec::with_capacity(n);
        for &stage in &self.0.stages {
            let mut ready: std::collections::BTreeSet<usize> = self
                .stage_steps(stage)
                .filter(|(i, _)| indegree[*i] == 0)
                .map(|(i, _)| i)
                .collect();
            while let Some(i) = ready.pop_first() {
                order.push(i);
                for e in self.0.graph.edges(self.0.step_nodes[i]) {
                    if let Node::Step(j) = self.0.graph[e.target()] {
                        indegree[j] -= 1;
                        if indegree[j] == 0 && self.0.steps[j].stage == stage {
                            ready.insert(j);
                        }
                    }
                }
            }
            // Cross-stage dependencies of later stages are already satisfied
            // by the gates; reset them so each stage starts clean.
            if let Some(next) = stage.next() {
                for (j, _) in self.stage_steps(next) {
                    indegree[j] = self
                        .0
                        .graph
                        .edges_directed(self.0.step_nodes[j], petgraph::Direction::Incoming)
                        .filter(|e| match self.0.graph[e.source()] {
                            Node::Step(k) => self.0.steps[k].stage == next,
                            Node::Gate(_) => false,
                        })
                        .count();
                }
            }
        }
        order
    }

    /// The graph in Graphviz DOT, one cluster per stage.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        out.push_str(&format!(
            "digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n",
            q(&self.0.project)
        ));
        for &stage in &self.0.stages {
            out.push_str(&format!(
                "  subgraph {} {{\n    label={};\n",
                q(&format!("cluster_{stage}")),
                q(&format!("{} {}", stage.level(), stage.title()))
            ));
            for (_, step) in self.stage_steps(stage) {
                out.push_str(&format!("    {};\n", q(&step.name)));
            }
            out.push_str(&format!(
                "    {} [shape=diamond, label={}];\n  }}\n",
                q(&format!("gate:{stage}")),
                q(&format!("{stage} gate"))
            ));
        }
        for edge in self.0.graph.edge_references() {
            let name = |n: NodeIndex| match self.0.graph[n] {
                Node::Step(i) => q(&self.0.steps[i].name),
                Node::Gate(s) => q(&format!("gate:{s}")),
            };
            out.push_str(&format!(
                "  {} -> {};\n",
                name(edge.source()),
                name(edge.target())
            ));
        }
        out.push_str("}\n");
        out
    }
}

/// An actual cycle through the nodes of a strongly connected component,
/// first node repeated at the end.
fn cycle_path(graph: &DiGraph<usize, ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
    // Start from the lowest index so the report is stable.
    let start = *scc.iter().min().expect("an scc is never empty");
    // Breadth-first search for the shortest way back to `start`.
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut next: Vec<NodeIndex> = graph.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort();
        for m in next {
            if m == start {
                let mut back = Vec::new();
                let mut cur = n;
                while cur != start {
                    back.push(cur);
                    cur = parent[&cur];
                }
                let mut path = vec![start];
                path.extend(back.into_iter().rev());
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    // Unreachable for a true SCC; fall back to listing its members.
    let mut path: Vec<NodeIndex> = scc.to_vec();
    path.push(start);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, stage: Stage) -> Step {
        Step::shell(name, stage, "true")
    }

    #[test]
    fn gates_chain_stages_and_order_is_stable() {
        let p = Pipeline::new(
            "p",
            vec![
                sh("b", Stage::Iac).depends_on(["a"]),
                sh("a", Stage::Iac),
                sh("t", Stage::Ci),
            ],
            None,
        )
        .unwrap();
        let order: Vec<&str> = p
            .ordered_steps()
            .iter()
            .map(|&i| p.steps()[i].name.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "t"]);
        let gate = p.gate_node(Stage::Iac).unwrap();
        assert_eq!(
            p.graph()
                .edges_directed(gate, petgraph::Direction::Incoming)
                .count(),
            2
        );
        assert!(p.to_dot().contains("\"gate:iac\" -> \"t\""));
    }

    #[test]
    fn reports_every_error() {
        let errors = Pipeline::new(
            "p",
            vec![
                sh("a", Stage::Iac).depends_on(["c"]),
                sh("b", Stage::Iac).depends_on(["a", "t", "zz"]),
                sh("c", Stage::Iac).depends_on(["b"]),
                sh("t", Stage::Cd),
                sh("bad name", Stage::Cd),
            ],
            None,
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("the earlier stage `ci` is missing")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("later stage `cd`")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("`zz`, which is not a step")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e == "dependency cycle: `a` -> `b` -> `c` -> `a`"),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("`bad name` may contain only")),
            "{text:?}"
        );
    }

    #[test]
    fn a_step_outside_the_declared_stages_is_an_error() {
        let errors = Pipeline::new(
            "p",
            vec![sh("a", Stage::Iac), sh("t", Stage::Ci)],
            Some(&[Stage::Iac]),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [PipelineError::UndeclaredStage {
                step: "t".to_owned(),
                stage: Stage::Ci
            }]
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = sh("a", Stage::Iac).retry_backoff(Duration::from_millis(100));
        assert_eq!(s.backoff_before(1), Duration::from_millis(100));
        assert_eq!(s.backoff_before(3), Duration::from_millis(400));
        assert_eq!(s.backoff_before(40), MAX_RETRY_BACKOFF);
    }

    #[test]
    fn fingerprint_ignores_retries_but_not_env() {
        let a = sh("a", Stage::Iac);
        assert_eq!(a.fingerprint(), a.clone().retries(3).fingerprint());
        assert_ne!(a.fingerprint(), a.clone().env("K", "V").fingerprint());
    }
}
