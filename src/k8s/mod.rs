//! Kubernetes: babysitting training workloads on a cluster.
//!
//! [`actuator`] carries out babysitter's actions on batch/v1 Jobs, JobSets, Kubeflow
//! PyTorchJobs and TrainJobs through the API server; [`workload`] holds what differs between
//! those kinds (where the suspend field, pod templates and pods are) as pure functions over
//! JSON, so the actuator stays one code path. docs/KUBERNETES.md is the user-facing contract
//! (annotations, the resume-checkpoint hand-off, RBAC).

pub mod actuator;
pub mod workload;
