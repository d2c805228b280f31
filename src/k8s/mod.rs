//! Kubernetes: babysitting training workloads on a cluster. [`discovery`] turns workloads
//! annotated `babysitter.dev/watch: "true"` into the engine's watches and ends them when the
//! workloads finish or disappear; [`leader`] elects one replica on a `coordination.k8s.io/v1`
//! Lease, and only that replica polls and acts.
pub mod discovery;
pub mod leader;
