//! Leader election: the replicas of babysitter share one `coordination.k8s.io/v1` Lease
//! (through kube-lease-manager) and only its holder polls and acts; the others serve the API
//! read-only.
//!
//! The engine is told who leads ([`Engine::set_leadership`]), which records every change of
//! this replica's leadership in the audit log. Being elected is not enough to act: this replica
//! also reads the Lease back and leads only while the Lease names it with an unexpired claim,
//! so a leader cut off from the API server stops acting once its claim could have run out,
//! before another replica can take over. A replica starts as a follower.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::task::JoinHandle;

use crate::config::KubernetesConfig;
use crate::engine::{Engine, Leadership};

/// Why leader election could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("kubernetes: {0}")]
    Config(String),
    #[error("kubernetes: cannot use the Lease {lease}: {source}")]
    Lease {
        lease: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
}

/// The election settings (from `[kubernetes]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    pub identity: String,
    pub lease_name: String,
    pub lease_namespace: String,
    /// Whole seconds, at least 2.
    pub lease_duration: Duration,
    /// Whole seconds, at least 1, below `lease_duration`.
    pub renew_before: Duration,
}

impl ElectionSettings {
    pub fn from_config(k: &KubernetesConfig) -> Result<ElectionSettings, LeaderError> {
        k.validate()
            .map_err(|e| LeaderError::Config(e.to_string()))?;
        Ok(ElectionSettings {
            identity: k
                .identity()
                .map_err(|e| LeaderError::Config(e.to_string()))?,
            lease_name: k.lease_name.clone(),
            lease_namespace: k.lease_namespace(),
            lease_duration: k.lease_duration,
            renew_before: k.lease_renew_before,
        })
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.lease_namespace, self.lease_name)
    }
}

/// A running election. Dropping it aborts the election without releasing the Lease (as a crash
/// would); [`Election::shutdown`] releases it. Either way another replica takes over within
/// the lease duration: kube-lease-manager's followers sleep until the claim they last saw runs
/// out, then lock the Lease (after a random wait of up to a second against collisions).
pub struct Election {
    manager: Option<
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
    >,
    follower: Option<JoinHandle<()>>,
    /// Held so that stopping the follower task does not yet release the Lease (the manager
    /// releases it when every receiver is gone).
    elected: Option<tokio::sync::watch::Receiver<bool>>,
    engine: Arc<Engine>,
    settings: ElectionSettings,
}

/// Makes this replica a follower, then joins the election on the Lease (created if missing).
pub async fn start(
    client: kube::Client,
    engine: Arc<Engine>,
    settings: ElectionSettings,
) -> Result<Election, LeaderError> {
    let secs = settings.lease_duration.as_secs();
    let grace = settings.renew_before.as_secs();
    // LeaseParams::new panics on these: they are checked first.
    if secs < 2 || grace == 0 || grace >= secs {
        return Err(LeaderError::Config(format!(
            "lease_duration ({secs} s) must be at least 2 s and above lease_renew_before ({grace} s, at least 1 s)"
        )));
    }
    engine
        .set_leadership(Leadership {
            is_leader: false,
            identity: Some(settings.identity.clone()),
            holder: None,
            lease: Some(settings.lease()),
        })
        .await;
    let manager = LeaseManagerBuilder::new(client.clone(), settings.lease_name.clone())
        .with_namespace(settings.lease_namespace.clone())
        .with_parameters(LeaseParams::new(settings.identity.clone(), secs, grace))
        .build()
        .await
        .map_err(|source| LeaderError::Lease {
            lease: settings.lease(),
            source,
        })?;
    let (elected, manager) = manager.watch().await;
    let api: Api<Lease> = Api::namespaced(client, &settings.lease_namespace);
    let keep = elected.clone();
    let follower = tokio::spawn(follow(api, elected, engine.clone(), settings.clone()));
    tracing::info!(identity = %settings.identity, lease = %settings.lease(), "joined the leader election");
    Ok(Election {
        manager: Some(manager),
        follower: Some(follower),
        elected: Some(keep),
        engine,
        settings,
    })
}

/// Feeds the engine: elected (kube-lease-manager) *and* confirmed by reading the Lease back.
async fn follow(
    api: Api<Lease>,
    mut elected: tokio::sync::watch::Receiver<bool>,
    engine: Arc<Engine>,
    s: ElectionSettings,
) {
    let every = (s.renew_before / 2).max(Duration::from_millis(500));
    let mut confirmed_at: Option<Instant> = None;
    let mut holder: Option<String> = None;
    loop {
        let open = tokio::select! {
            r = elected.changed() => r.is_ok(),
            _ = tokio::time::sleep(every) => true,
        };
        let is_elected = open && *elected.borrow();
        match api.get_opt(&s.lease_name).await {
            Ok(Some(lease)) => {
                let view = LeaseView::of(&lease);
                if view.claimed_by(&s.identity, SystemTime::now()) {
                    confirmed_at = Some(Instant::now());
                }
                holder = view.holder;
            }
            Ok(None) => holder = None,
            Err(e) => tracing::warn!(error = %e, lease = %s.lease(), "cannot read the Lease"),
        }
        // A claim confirmed longer ago than it lasts may have been taken over meanwhile.
        let confirmed = confirmed_at.is_some_and(|t| t.elapsed() < s.lease_duration);
        engine
            .set_leadership(Leadership {
                is_leader: is_elected && confirmed,
                identity: Some(s.identity.clone()),
                holder: holder.clone(),
                lease: Some(s.lease()),
            })
            .await;
        if !open {
            tracing::warn!(lease = %s.lease(), "leader election ended: following");
            return;
        }
    }
}

/// What one read of the Lease says.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub holder: Option<String>,
    /// When the holder's claim runs out.
    pub expires: Option<SystemTime>,
}

impl LeaseView {
    pub fn of(lease: &Lease) -> LeaseView {
        let Some(spec) = &lease.spec else {
            return LeaseView {
                holder: None,
                expires: None,
            };
        };
        let expires = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renew), Some(secs)) if secs > 0 => {
                SystemTime::from(renew.0).checked_add(Duration::from_secs(secs as u64))
            }
            _ => None,
        };
        LeaseView {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            expires,
        }
    }

    /// Does `identity` hold an unexpired claim at `now`?
    pub fn claimed_by(&self, identity: &str, now: SystemTime) -> bool {
        self.holder.as_deref() == Some(identity) && self.expires.is_some_and(|e| e > now)
    }
}

impl Election {
    /// Leaves the election and releases the Lease (when held); this replica stops leading first.
    pub async fn shutdown(mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
            let _ = f.await;
        }
        // Stop acting before the Lease can pass to another replica.
        self.engine
            .set_leadership(Leadership {
                is_leader: false,
                identity: Some(self.settings.identity.clone()),
                holder: None,
                lease: Some(self.settings.lease()),
            })
            .await;
        // The last receiver gone tells the manager to release the Lease and stop.
        drop(self.elected.take());
        if let Some(m) = self.manager.take() {
            match tokio::time::timeout(self.settings.lease_duration, m).await {
                Ok(Ok(Ok(_))) => {
                    tracing::info!(lease = %self.settings.lease(), "left the leader election")
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(error = %e, "releasing the Lease failed; it expires by itself")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election task failed"),
                Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
            }
        }
    }

    /// Stops at once without releasing the Lease, as a crash would.
    pub fn abort(mut self) {
        if let Some(m) = self.manager.take() {
            m.abort();
        }
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        if let Some(m) = self.manager.take() {
            m.abort();
        }
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: Option<i32>) -> Lease {
        let now = k8s_openapi::jiff::Timestamp::now();
        let renew = now - k8s_openapi::jiff::SignedDuration::from_secs(renewed_secs_ago);
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renew)),
                lease_duration_seconds: duration,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_claim_counts_only_while_unexpired_and_for_its_holder() {
        let now = SystemTime::now();
        let v = LeaseView::of(&lease(Some("a"), 1, Some(10)));
        assert!(v.claimed_by("a", now));
        assert!(!v.claimed_by("b", now));
        let v = LeaseView::of(&lease(Some("a"), 11, Some(10)));
        assert_eq!(v.holder.as_deref(), Some("a"));
        assert!(!v.claimed_by("a", now), "expired");
        let v = LeaseView::of(&lease(Some("a"), 0, None));
        assert!(!v.claimed_by("a", now), "no duration: no claim");
        let v = LeaseView::of(&lease(None, 0, Some(10)));
        assert_eq!(v.holder, None);
        assert_eq!(
            LeaseView::of(&Lease::default()),
            LeaseView {
                holder: None,
                expires: None
            }
        );
    }

    #[test]
    fn settings_come_from_the_config_and_are_checked() {
        let k = KubernetesConfig {
            enabled: true,
            identity: Some("pod-a".into()),
            lease_namespace: Some("ops".into()),
            ..KubernetesConfig::default()
        };
        let s = ElectionSettings::from_config(&k).unwrap();
        assert_eq!(s.identity, "pod-a");
        assert_eq!(s.lease(), "ops/babysitter-leader");
        let bad = KubernetesConfig {
            lease_renew_before: Duration::from_secs(15),
            ..k
        };
        let err = ElectionSettings::from_config(&bad).unwrap_err().to_string();
        assert!(err.contains("lease_renew_before"), "{err}");
    }
}
