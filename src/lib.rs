//! babysitter
pub mod act;
pub mod api;
pub mod audit;
pub mod charts;
pub mod clock;
pub mod config;
pub mod detect;
pub mod engine;
pub mod incident;
pub mod notify;
pub mod policy;
pub mod runbook;
pub mod sim;
pub mod sources;
pub mod verify;
