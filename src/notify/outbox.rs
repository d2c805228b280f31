//! Outbox: a page still undelivered after every retry is not dropped. It is queued per
//! incident (dedup key) and sent again, in order, until delivered or `redeliver_for` has passed
//! (then an ERROR and a `page_failed` entry say it was given up). Redelivery backs off: the
//! first one `redeliver_every` after the failure, then twice as long after each failed one, up
//! to [`MAX_REDELIVER_WAIT`] (or `redeliver_every`, if longer). A newer page for a queued
//! incident waits behind the older ones, so a receiver never sees an acknowledge before its
//! trigger; a resolve supersedes what is queued for its incident (there is nothing left to
//! tell a human about). Only transient failures are queued: a page the receiver refused for
//! good (4xx) would be refused again. The engine still hears of the first failure (and records
//! it in the audit log).
//!
//! Once a [`PageStore`] is attached ([`Pager::attach_store`], done by the engine at start-up),
//! the queue is also written to the `page_outbox` table: what a stopped babysitter had not
//! delivered is loaded and redelivered by the next one, and every queued or given-up page is
//! recorded as `page_failed` in the audit log.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::notify::http::every_while_alive;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::store::{PageStore, now_ms};
use super::{Page, PageAction, PageError, Pager};
use crate::config::DeliveryConfig;

/// The longest wait between two redeliveries (unless `redeliver_every` is longer).
pub const MAX_REDELIVER_WAIT: Duration = Duration::from_secs(15 * 60);

/// A queued page, with its row in `page_outbox` once persisted.
struct Queued {
    page: Page,
    ord: Option<i64>,
}

struct Queue {
    pages: Vec<Queued>,
    /// When the oldest queued page first failed.
    since: Instant,
    /// The same, on the wall clock (persisted; survives a restart).
    since_ms: i64,
    /// Failed redeliveries so far.
    tries: u32,
    /// Not redelivered before this.
    next_try: Instant,
}

struct Shared {
    inner: Arc<dyn Pager>,
    queues: Mutex<BTreeMap<String, Queue>>,
    every: Duration,
    give_up_after: Duration,
    store: OnceLock<Arc<PageStore>>,
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

/// The wait before the next redelivery after `tries` failed ones.
pub fn redeliver_wait(every: Duration, tries: u32) -> Duration {
    let cap = MAX_REDELIVER_WAIT.max(every);
    every
        .checked_mul(2u32.saturating_pow(tries.min(20)))
        .unwrap_or(cap)
        .min(cap)
}

impl Shared {
    fn store(&self) -> Option<&Arc<PageStore>> {
        self.store.get()
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Persists a page (when a store is attached); returns its row.
    async fn persist(&self, page: &Page, since_ms: i64, error: &str) -> Option<i64> {
        let store = self.store()?;
        match store.insert(self.name(), page, since_ms, error).await {
            Ok(ord) => Some(ord),
            Err(e) => {
                tracing::error!(pager = %self.name(), dedup_key = %page.dedup_key, error = %e,
                    "cannot persist an undelivered page: it is kept in memory only");
                None
            }
        }
    }

    async fn forget(&self, q: &Queued) {
        if let (Some(store), Some(ord)) = (self.store(), q.ord)
            && let Err(e) = store.delete(self.name(), ord).await
        {
            tracing::error!(pager = %self.name(), error = %e, "cannot delete a delivered page from the outbox: it may be sent twice");
        }
    }

    async fn forget_key(&self, key: &str) {
        if let Some(store) = self.store()
            && let Err(e) = store.delete_key(self.name(), key).await
        {
            tracing::error!(pager = %self.name(), dedup_key = %key, error = %e, "cannot delete pages from the outbox");
        }
    }

    async fn record_failure(&self, page: &Page, error: &str, given_up: bool) {
        if let Some(store) = self.store() {
            store
                .record_failure(self.name(), page, error, given_up)
                .await;
        }
    }
}

impl Outbox {
    /// Wraps `inner`; inside a Tokio runtime it starts the redelivery task.
    pub fn new(inner: Arc<dyn Pager>, cfg: &DeliveryConfig) -> Outbox {
        let shared = Arc::new(Shared {
            inner,
            queues: Mutex::new(BTreeMap::new()),
            every: cfg.redeliver_every,
            give_up_after: cfg.redeliver_for,
            store: OnceLock::new(),
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
/// good is dropped with an ERROR and a `page_failed` entry. Each queued page that arrives is
/// recorded as redelivered, except the last one when `last_is_current` (the page being sent
/// now, which the engine records itself).
async fn flush(
    s: &Shared,
    key: &str,
    q: &mut Queue,
    last_is_current: bool,
) -> Result<(), PageError> {
    while let Some(first) = q.pages.first() {
        match s.inner.send(&first.page).await {
            Ok(()) => {
                tracing::info!(pager = %s.name(), dedup_key = %key, action = ?first.page.action, "queued page delivered");
                s.forget(first).await;
                let current = last_is_current && q.pages.len() == 1;
                if !current && let Some(store) = s.store() {
                    store.record_redelivered(s.name(), &first.page).await;
                }
                q.pages.remove(0);
            }
            Err(e) if redeliverable(&e) => return Err(e),
            Err(e) => {
                tracing::error!(pager = %s.name(), dedup_key = %key, error = %e, "queued page refused by the receiver: dropped");
                s.forget(first).await;
                s.record_failure(&first.page, &e.to_string(), true).await;
                q.pages.remove(0);
            }
        }
    }
    Ok(())
}

/// One pass over the queues: redeliver in order what is due, give up on what is too old.
async fn redeliver(s: &Shared) {
    let mut queues = s.queues.lock().await;
    let keys: Vec<String> = queues.keys().cloned().collect();
    let now = Instant::now();
    for key in keys {
        let Some(q) = queues.get_mut(&key) else {
            continue;
        };
        if now.saturating_duration_since(q.since) > s.give_up_after {
            tracing::error!(
                pager = %s.name(), dedup_key = %key, pages = q.pages.len(),
                "giving up redelivering pages: a human must check this incident"
            );
            let why = format!(
                "not delivered for {}: given up",
                humantime::format_duration(s.give_up_after)
            );
            for p in &q.pages {
                s.record_failure(&p.page, &why, true).await;
            }
            s.forget_key(&key).await;
            queues.remove(&key);
            continue;
        }
        if q.next_try > now {
            continue;
        }
        if let Err(e) = flush(s, &key, q, false).await {
            q.tries = q.tries.saturating_add(1);
            let wait = redeliver_wait(s.every, q.tries);
            q.next_try = Instant::now() + wait;
            tracing::warn!(pager = %s.name(), dedup_key = %key, error = %e, tries = q.tries,
                retry_in_secs = wait.as_secs_f64(), "redelivery failed, will retry");
            if let Some(store) = s.store()
                && let Err(err) = store
                    .set_tries(s.name(), &key, q.tries, &e.to_string())
                    .await
            {
                tracing::warn!(pager = %s.name(), error = %err, "cannot note a failed redelivery");
            }
        }
        if q.pages.is_empty() {
            queues.remove(&key);
        }
    }
}

/// Loads what a previous babysitter left in `page_outbox` for this pager and persists what
/// failed before the store was attached.
async fn attach(s: &Shared, store: Arc<PageStore>) {
    if s.store.set(store.clone()).is_err() {
        return;
    }
    let mut queues = s.queues.lock().await;
    // Pages that failed before the store was attached: persist them now.
    for (key, q) in queues.iter_mut() {
        for p in q.pages.iter_mut().filter(|p| p.ord.is_none()) {
            p.ord = s
                .persist(&p.page, q.since_ms, "queued before start-up")
                .await;
        }
        tracing::debug!(pager = %s.name(), dedup_key = %key, "queued pages persisted");
    }
    let stored = match store.load(s.name()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(pager = %s.name(), error = %e, "cannot load undelivered pages: they are not redelivered");
            return;
        }
    };
    let (now, now_wall) = (Instant::now(), now_ms());
    let mut loaded = 0;
    for row in stored {
        if queues
            .values()
            .any(|q| q.pages.iter().any(|p| p.ord == Some(row.ord)))
        {
            continue;
        }
        loaded += 1;
        let age = Duration::from_millis(u64::try_from(now_wall - row.first_failed_ms).unwrap_or(0));
        let q = queues
            .entry(row.page.dedup_key.clone())
            .or_insert_with(|| Queue {
                pages: Vec::new(),
                since: now.checked_sub(age).unwrap_or(now),
                since_ms: row.first_failed_ms,
                tries: row.tries,
                // Due at the next pass: the receiver may well be back.
                next_try: now,
            });
        // Older rows first: they were queued before anything this process added.
        let at = q
            .pages
            .iter()
            .position(|p| p.ord.is_none_or(|o| o > row.ord))
            .unwrap_or(q.pages.len());
        q.pages.insert(
            at,
            Queued {
                page: row.page,
                ord: Some(row.ord),
            },
        );
    }
    if loaded > 0 {
        tracing::warn!(pager = %s.name(), pages = loaded, "undelivered pages from before the restart are queued for redelivery");
    }
}

#[async_trait]
impl Pager for Outbox {
    fn name(&self) -> &str {
        self.shared.inner.name()
    }

    async fn attach_store(&self, store: Arc<PageStore>) {
        attach(&self.shared, store).await;
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let s = self.shared.as_ref();
        let key = page.dedup_key.clone();
        let mut queues = s.queues.lock().await;
        if page.action == PageAction::Resolve
            && let Some(q) = queues.remove(&key)
        {
            tracing::info!(pager = %s.name(), dedup_key = %key, superseded = q.pages.len(), "resolve supersedes queued pages");
            s.forget_key(&key).await;
        }
        if let Some(q) = queues.get_mut(&key) {
            let ord = s
                .persist(page, q.since_ms, "queued behind earlier pages")
                .await;
            q.pages.push(Queued {
                page: page.clone(),
                ord,
            });
            let result = flush(s, &key, q, true).await;
            if q.pages.is_empty() {
                queues.remove(&key);
            }
            return result.map_err(|e| self.queued_error(e));
        }
        match s.inner.send(page).await {
            Ok(()) => Ok(()),
            Err(e) if redeliverable(&e) => {
                let since_ms = now_ms();
                let text = e.to_string();
                let ord = s.persist(page, since_ms, &text).await;
                s.record_failure(page, &text, false).await;
                queues.insert(
                    key,
                    Queue {
                        pages: vec![Queued {
                            page: page.clone(),
                            ord,
                        }],
                        since: Instant::now(),
                        since_ms,
                        tries: 0,
                        next_try: Instant::now() + s.every,
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
        /// Every try, delivered or not.
        tries: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl Pager for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        async fn send(&self, page: &Page) -> Result<(), PageError> {
            self.tries.fetch_add(1, Ordering::SeqCst);
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

    #[test]
    fn redelivery_waits_double_and_cap() {
        let m = Duration::from_secs(60);
        assert_eq!(redeliver_wait(m, 0), m);
        assert_eq!(redeliver_wait(m, 1), 2 * m);
        assert_eq!(redeliver_wait(m, 3), 8 * m);
        assert_eq!(redeliver_wait(m, 4), MAX_REDELIVER_WAIT);
        assert_eq!(redeliver_wait(m, 400), MAX_REDELIVER_WAIT);
        // A period longer than the cap is kept.
        let h = Duration::from_secs(3600);
        assert_eq!(redeliver_wait(h, 5), h);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_redeliveries_back_off() {
        let flaky = Arc::new(Flaky::default());
        flaky.down.store(true, Ordering::SeqCst);
        let t0 = tokio::time::Instant::now();
        let outbox = Outbox::new(flaky.clone(), &cfg());
        assert!(outbox.send(&page("k", PageAction::Trigger)).await.is_err());
        let tries = || flaky.tries.load(Ordering::SeqCst);
        assert_eq!(tries(), 1);
        // Redeliveries at 1 min, then 2 min later (3 min), then 4 min later (7 min).
        for (at_secs, want) in [(59, 1), (61, 2), (179, 2), (181, 3), (419, 3), (421, 4)] {
            tokio::time::sleep_until(t0 + Duration::from_secs(at_secs)).await;
            assert_eq!(tries(), want, "after {at_secs} s");
        }
        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(8 * 60)).await;
        assert_eq!(outbox.queued().await, 0);
        assert_eq!(flaky.got.lock().unwrap().len(), 1);
    }
}
