//! Stage 1 of mlops, infrastructure as code: the environment a project's
//! code runs in, and the services it runs, declared in `[infra]` and
//! converged by a [`Provider`].

pub mod apply;
pub mod docker;
pub mod health;
pub mod kinds;
pub mod local;
pub mod ownership;
pub mod plan;
pub mod provider;
pub mod spec;

pub use apply::{ApplyContext, ApplyReport, InfraError};
pub use docker::DockerProvider;
pub use kinds::{IacOptions, StepInfra, register};
pub use local::{LocalProvider, SupervisorCommand};
pub use ownership::Controller;
pub use plan::{Action, Owned, Plan};
pub use provider::{
    Desired, Instance, ModelRef, Provider, ProviderError, Replica, ReplicaState, Scope,
};
pub use spec::{InfraSpec, ProviderKind, ReplicaRange, ServiceSpec};
