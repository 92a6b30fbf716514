//! Autoscaling policies, pure and documented: [`hpa`] decides as
//! Kubernetes' HorizontalPodAutoscaler does, [`kpa`] as Knative's
//! autoscaler. [`scenario`] reads the scenario files that
//! `mlops autoscale simulate` runs (the format of the reference cases taken
//! from both projects' test suites) and gives each decision as JSON.

pub mod hpa;
pub mod kpa;
pub mod scenario;
