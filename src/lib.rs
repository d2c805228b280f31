//! # babysitter
//!
//! Babysits long-running ML training jobs: it polls each watched run's charts, detects
//! anomalies, diagnoses them against Markdown runbooks, acts through a deterministic policy
//! gate (pause, resume, restart from checkpoint, patch configuration), verifies that the action
//! worked, pages a human when policy asks for one or when it could not fix the problem, and
//! records every decision and action in a hash-chained audit log.
//!
//! ## Layout
//! Data flows one way; each stage is one module, and the audit log sits beside every step:
//!
//! ```text
//! config ─▶ sources ─▶ detect ─▶ incident ─▶ runbook ─▶ policy ─▶ act ─▶ verify
//!  (watches)  (charts)  (findings) (lifecycle) (diagnosis) (gate)  (actions) (recovered?)
//!                  └──────────── notify (pages) ──── audit (every step) ────────┘
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`] | typed config (TOML/YAML + `BABYSITTER_*` env), watches, defaults |
//! | [`charts`] | chart roles (FORMATS.md §1), `ChartKey`, `Series`, `ChartSet` |
//! | [`sources`] | the `MetricsSource` trait: polled for many runs at once; [`sources::prometheus`]: batched, incremental PromQL with profiles, one-pass decoding, watches added at run time |
//! | [`sim`] | the simulated training runs of the demo: a source *and* an actuator |
//! | [`detect`] | pure, causal detectors → `Finding`s; hysteresis (once per episode) |
//! | [`incident`] | incidents per run and family; the lifecycle state machine; re-diagnosis while no action of the plan has run |
//! | [`runbook`] | Markdown runbooks with front matter; checks (PromQL or charts) and branches; deterministic diagnosis → `Plan` |
//! | [`policy`] | the gate: autonomy, modes, circuit breakers, cooldowns, read-only |
//! | [`act`] | the `Action` enum and the `Actuator` trait; what a restart from a checkpoint throws away (`act::rollback`) |
//! | [`agent`] | the optional LLM investigator: read-only tools, one proposed runbook step, budgets, evals |
//! | [`k8s`] | Kubernetes: discovery of annotated workloads, leader election on a Lease, the actuator for Job, JobSet, PyTorchJob and TrainJob |
//! | [`verify`] | did the run recover after the action? |
//! | [`replay`] | `babysitter replay`: CSV traces, causal replay, scoring, the detection benchmark and its baseline rules, incidents exported as labelled traces |
//! | [`notify`] | the `Pager` trait; console, PagerDuty, Slack, signed webhook, Alertmanager, Opsgenie; routes, reminders and a durable outbox |
//! | [`audit`] | the append-only, hash-chained audit log (SQLite / PostgreSQL via sqlx `Any`): verify, signed heads, retention checkpoints, export |
//! | [`engine`] | the loop that drives every stage and owns the state between polls |
//! | [`api`] | the HTTP API (axum): watches, incidents (and their export as traces), approvals, runbooks and their execution, audit, leader, alert enrichment; bearer tokens with roles |
//! | [`dashboard`] | server-rendered pages for on-call: runs, SVG charts with findings, incidents with Approve / Reject, the audit log |
//! | [`app`] | wiring: `App::build` then `App::run_until` |
//! | [`demo`] | the embedded default: three simulated runs and the story on the terminal |
//! | [`cli`] | `serve`, `demo`, `check`, `replay`, `audit verify/export`, `approve`, `reject`, `incident export`, `agent eval` |
//! | [`clock`] | time as a parameter: system, scaled (demo) and manual (tests) clocks |
//! | [`telemetry`] | babysitter's own Prometheus metrics |
//!
//! Traits sit only at I/O edges ([`sources::MetricsSource`], [`act::Actuator`],
//! [`notify::Pager`], [`agent::LlmClient`], [`runbook::CheckRunner`]); detection, diagnosis, policy and verification are
//! synchronous functions over values, so they are cheap to test exhaustively.
pub mod act;
pub mod agent;
pub mod api;
pub mod app;
pub mod audit;
pub mod charts;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod incident;
pub mod k8s;
pub mod notify;
pub mod policy;
pub mod replay;
pub mod runbook;
pub mod sim;
pub mod sources;
pub mod telemetry;
pub mod verify;
