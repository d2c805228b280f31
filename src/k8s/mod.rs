//! Kubernetes: babysitting training workloads on a cluster.
//!
//! [`discovery`] turns workloads annotated `babysitter.dev/watch: "true"` into the engine's
//! watches and ends them when the workloads finish or disappear; [`leader`] elects one replica
//! on a `coordination.k8s.io/v1` Lease, and only that replica polls and acts. [`actuator`]
//! carries out babysitter's actions on batch/v1 Jobs, JobSets, Kubeflow PyTorchJobs and
//! TrainJobs through the API server; [`workload`] holds what differs between those kinds (where
//! the suspend field, pod templates and pods are) as pure functions over JSON, so the actuator
//! stays one code path; [`inspector`] gives the investigating agent read-only views of a
//! workload (status, pods, Events, logs). docs/KUBERNETES.md is the user-facing contract (annotations, the
//! resume-checkpoint hand-off, RBAC).

pub mod actuator;
pub mod discovery;
pub mod inspector;
pub mod leader;
pub mod workload;
