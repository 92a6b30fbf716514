//! Stage 6 of mlops, load testing and autoscaling.
//!
//! So far: the autoscaling policies ([`autoscale`]) — Kubernetes'
//! HorizontalPodAutoscaler (`hpa`) and Knative's autoscaler (`kpa`) as pure
//! functions of what their controllers see, and the scenario format that
//! `mlops autoscale simulate` runs. The load generator, the five kinds of
//! load test, the capacity model and the autoscaler service come with the
//! rest of this stage (see `docs/loadtest.md`).

pub mod autoscale;
