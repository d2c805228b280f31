//! Outbox: a page still undelivered after every retry is not dropped. It is queued per
//! incident (dedup key) and sent again every `redeliver_every`, in order, until delivered or
//! `redeliver_for` has passed (then an ERROR says it was given up). A newer page for a queued
//! incident waits behind the older ones, so a receiver never sees an acknowledge before its
//! trigger; a resolve supersedes what is queued for its incident (there is nothing left to
//! tell a human about). Only transient failures are queued: a page the receiver refused for
//! good (4xx) would be refused again. The engine still hears of the first failure (and records
//! it in the audit log); the queue lives in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::notify::http::every_while_alive;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Page, PageAction, PageError, Pager};
use crate::config::DeliveryConfig;

struct Queue {
    pages: Vec<Page>,
    /// When the oldest queued page first failed.
    since: Instant,
}

struct Shared {
    inner: Arc<dyn Pager>,
    queues: Mutex<BTreeMap<String, Queue>>,
    every: Duration,
    give_up_after: Duration,
}

pub struct Outbox {
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

fn redeliverable(e: &PageError) -> bool {
    matches!(e, PageError::Delivery { .. } | PageError::Route { .. })
}

impl Outbox {
    /// Wraps `inner`; inside a Tokio runtime it starts the redelivery task.
    pub fn new(inner: Arc<dyn Pager>, cfg: &DeliveryConfig) -> Outbox {
        let shared = Arc::new(Shared {
            inner,
            queues: Mutex::new(BTreeMap::new()),
            every: cfg.redeliver_every,
            give_up_after: cfg.redeliver_for,
        });
        let task = tokio::runtime::Handle::try_current().ok().map(|h| {
            h.spawn(every_while_alive(
                Arc::downgrade(&shared),
                shared.every,
                |s| async move {
                    redeliver(&s).await;
                    true
                },
            ))
        });
        Outbox { shared, task }
    }

    /// Pages waiting for redelivery.
    pub async fn queued(&self) -> usize {
        self.shared
            .queues
            .lock()
            .await
            .values()
            .map(|q| q.pages.len())
            .sum()
    }

    fn queued_error(&self, e: PageError) -> PageError {
        let note = format!(
            "; queued for redelivery every {}",
            humantime::format_duration(self.shared.every)
        );
        match e {
            PageError::Delivery { pager, message } => PageError::Delivery {
                pager,
                message: message + &note,
            },
            PageError::Route {
                route,
                delivered,
                mut failed,
            } => {
                failed.push(note.trim_start_matches("; ").to_string());
                PageError::Route {
                    route,
                    delivered,
                    failed,
                }
            }
            other => other,
        }
    }
}

/// Sends a queue's pages in order; stops at the first transient failure. A page refused for
/// good is dropped with an ERROR.
async fn flush(inner: &dyn Pager, key: &str, q: &mut Queue) -> Result<(), PageError> {
    while let Some(first) = q.pages.first() {
        match inner.send(first).await {
            Ok(()) => {
                tracing::info!(pager = %inner.name(), dedup_key = %key, action = ?first.action, "queued page delivered");
                q.pages.remove(0);
            }
            Err(e) if redeliverable(&e) => return Err(e),
            Err(e) => {
                tracing::error!(pager = %inner.name(), dedup_key = %key, error = %e, "queued page refused by the receiver: dropped");
                q.pages.remove(0);
            }
        }
    }
    Ok(())
}

/// One pass over the queues: redeliver in order, give up on what is too old.
async fn redeliver(s: &Shared) {
    let mut queues = s.queues.lock().await;
    let keys: Vec<String> = queues.keys().cloned().collect();
    for key in keys {
        let Some(q) = queues.get_mut(&key) else {
            continue;
        };
        if q.since.elapsed() > s.give_up_after {
            tracing::error!(
                pager = %s.inner.name(), dedup_key = %key, pages = q.pages.len(),
                "giving up redelivering pages: a human must check this incident"
            );
            queues.remove(&key);
            continue;
        }
        if let Err(e) = flush(s.inner.as_ref(), &key, q).await {
            tracing::warn!(pager = %s.inner.name(), dedup_key = %key, error = %e, "redelivery failed, will retry");
        }
        if q.pages.is_empty() {
            queues.remove(&key);
        }
    }
}

#[async_trait]
impl Pager for Outbox {
    fn name(&self) -> &str {
        self.shared.inner.name()
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let inner = self.shared.inner.as_ref();
        let key = page.dedup_key.clone();
        let mut queues = self.shared.queues.lock().await;
        if page.action == PageAction::Resolve
            && let Some(q) = queues.remove(&key)
        {
            tracing::info!(pager = %inner.name(), dedup_key = %key, superseded = q.pages.len(), "resolve supersedes queued pages");
        }
        if let Some(q) = queues.get_mut(&key) {
            q.pages.push(page.clone());
            let result = flush(inner, &key, q).await;
            if q.pages.is_empty() {
                queues.remove(&key);
            }
            return result.map_err(|e| self.queued_error(e));
        }
        match inner.send(page).await {
            Ok(()) => Ok(()),
            Err(e) if redeliverable(&e) => {
                queues.insert(
                    key,
                    Queue {
                        pages: vec![page.clone()],
                        since: Instant::now(),
                    },
                );
                Err(self.queued_error(e))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Records what it delivered; fails while `down`.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        reject: AtomicBool,
        got: StdMutex<Vec<(String, PageAction)>>,
    }

    #[async_trait]
    impl Pager for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn send(&self, page: &Page) -> Result<(), PageError> {
            if self.reject.load(Ordering::SeqCst) {
                return Err(PageError::Rejected {
                    pager: "flaky".into(),
                    status: 400,
                    body: "bad".into(),
                });
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(PageError::Delivery {
                    pager: "flaky".into(),
                    message: "connection refused".into(),
                });
            }
            self.got
                .lock()
                .unwrap()
                .push((page.dedup_key.clone(), page.action));
            Ok(())
        }
    }

    fn page(key: &str, action: PageAction) -> Page {
        Page {
            dedup_key: key.into(),
            ..Page::sample(action)
        }
    }

    fn cfg() -> DeliveryConfig {
        DeliveryConfig {
            redeliver_every: Duration::from_secs(60),
            redeliver_for: Duration::from_secs(3600),
            ..DeliveryConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn undelivered_pages_are_redelivered_in_order() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let outbox = Outbox::new(flaky.clone(), &cfg());
        let err = outbox
            .send(&page("k", PageAction::Trigger))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("queued for redelivery every 1m"),
            "{err}"
        );
        // A later page of the same incident waits behind the trigger.
        assert!(
            outbox
                .send(&page("k", PageAction::Acknowledge))
                .await
                .is_err()
        );
        assert_eq!(outbox.queued().await, 2);

        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(outbox.queued().await, 0);
        assert_eq!(
            *flaky.got.lock().unwrap(),
            vec![
                ("k".to_string(), PageAction::Trigger),
                ("k".to_string(), PageAction::Acknowledge)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolve_supersedes_and_refusals_are_not_queued() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let outbox = Outbox::new(flaky.clone(), &cfg());
        assert!(outbox.send(&page("k", PageAction::Trigger)).await.is_err());
        flaky.down.store(false, Ordering::SeqCst);
        outbox.send(&page("k", PageAction::Resolve)).await.unwrap();
        assert_eq!(outbox.queued().await, 0);
        assert_eq!(
            *flaky.got.lock().unwrap(),
            vec![("k".to_string(), PageAction::Resolve)]
        );

        flaky.reject.store(true, Ordering::SeqCst);
        let err = outbox
            .send(&page("j", PageAction::Trigger))
            .await
            .unwrap_err();
        assert!(matches!(err, PageError::Rejected { .. }));
        assert_eq!(outbox.queued().await, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn redelivery_gives_up_after_redeliver_for() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let mut c = cfg();
        c.redeliver_for = Duration::from_secs(150);
        let outbox = Outbox::new(flaky.clone(), &c);
        assert!(outbox.send(&page("k", PageAction::Trigger)).await.is_err());
        tokio::time::sleep(Duration::from_secs(121)).await;
        assert_eq!(outbox.queued().await, 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(outbox.queued().await, 0);
        assert!(flaky.got.lock().unwrap().is_empty());
    }
}
