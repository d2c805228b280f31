//! Routing: a page goes to the pagers of its route (the watch's on-call route), all at once.
//! A route name resolves to `[routes] NAME = [pagers…]`, else to a pager of that name, else
//! to `default_route`; a page whose route resolves nowhere goes to every pager rather than
//! to none. One pager failing does not stop the others; the error names each failure.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::alertmanager::AlertmanagerPager;
use super::opsgenie::OpsgeniePager;
use super::pagerduty::PagerDutyPager;
use super::slack::SlackPager;
use super::webhook::WebhookPager;
use super::{ConsolePager, Outbox, Page, PageError, Pager};
use crate::config::{Config, PagerConfig};

pub struct Router {
    pagers: BTreeMap<String, Arc<dyn Pager>>,
    routes: BTreeMap<String, Vec<String>>,
    default_route: Option<String>,
    /// Also gets every page (the demo's console, so the story shows pages).
    tee: Option<Arc<dyn Pager>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("pagers", &self.pagers.keys().collect::<Vec<_>>())
            .field("routes", &self.routes)
            .field("default_route", &self.default_route)
            .finish()
    }
}

impl Router {
    pub fn new(
        pagers: BTreeMap<String, Arc<dyn Pager>>,
        routes: BTreeMap<String, Vec<String>>,
        default_route: Option<String>,
    ) -> Router {
        Router {
            pagers,
            routes,
            default_route,
            tee: None,
        }
    }

    /// Also sends every page to `tee` (its failures count like any pager's).
    pub fn with_tee(mut self, tee: Arc<dyn Pager>) -> Router {
        self.tee = Some(tee);
        self
    }

    fn resolve_one(&self, route: &str) -> Option<Vec<String>> {
        if let Some(members) = self.routes.get(route) {
            return Some(members.clone());
        }
        if self.pagers.contains_key(route) {
            return Some(vec![route.to_string()]);
        }
        None
    }

    /// The names of the pagers a page on `route` goes to.
    pub fn targets(&self, route: &str) -> Vec<String> {
        self.resolve_one(route)
            .or_else(|| {
                self.default_route
                    .as_deref()
                    .and_then(|d| self.resolve_one(d))
            })
            .unwrap_or_else(|| {
                tracing::warn!(route, "route reaches no pager: paging every pager");
                self.pagers.keys().cloned().collect()
            })
    }
}

#[async_trait]
impl Pager for Router {
    fn name(&self) -> &str {
        "router"
    }

    async fn attach_store(&self, store: Arc<super::PageStore>) {
        for p in self.pagers.values() {
            p.attach_store(store.clone()).await;
        }
        if let Some(t) = &self.tee {
            t.attach_store(store).await;
        }
    }

    async fn send(&self, page: &Page) -> Result<(), PageError> {
        let mut set = tokio::task::JoinSet::new();
        let mut targets: Vec<(String, Arc<dyn Pager>)> = self
            .targets(&page.route)
            .into_iter()
            .filter_map(|n| self.pagers.get(&n).map(|p| (n, p.clone())))
            .collect();
        if let Some(t) = &self.tee {
            targets.push((t.name().to_string(), t.clone()));
        }
        for (name, pager) in targets {
            let page = page.clone();
            set.spawn(async move { (name, pager.send(&page).await) });
        }
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((name, Ok(()))) => delivered.push(name),
                Ok((name, Err(e))) => {
                    tracing::error!(pager = %name, dedup_key = %page.dedup_key, error = %e, "page not delivered");
                    failed.push(e.to_string());
                }
                Err(e) => failed.push(format!("a pager task failed: {e}")),
            }
        }
        delivered.sort();
        failed.sort();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PageError::Route {
                route: page.route.clone(),
                delivered,
                failed,
            })
        }
    }
}

/// One pager from its config (at config path `at`), remote ones behind an [`Outbox`]; `console` is used for the
/// `console` kind.
pub fn build_one(
    name: &str,
    at: &str,
    cfg: &PagerConfig,
    console: &Arc<ConsolePager>,
) -> Result<Arc<dyn Pager>, PageError> {
    let pager: Arc<dyn Pager> = match cfg {
        PagerConfig::Console => console.clone(),
        PagerConfig::PagerDuty(c) => Arc::new(PagerDutyPager::new_at(name, at, c)?),
        PagerConfig::Slack(c) => Arc::new(SlackPager::new_at(name, at, c)?),
        PagerConfig::Webhook(c) => Arc::new(WebhookPager::new_at(name, at, c)?),
        PagerConfig::Alertmanager(c) => Arc::new(AlertmanagerPager::new_at(name, at, c)?),
        PagerConfig::Opsgenie(c) => Arc::new(OpsgeniePager::new_at(name, at, c)?),
    };
    // Remote pagers keep what they could not deliver and send it again.
    Ok(match cfg.delivery() {
        Some(d) => Arc::new(Outbox::new(pager, d)),
        None => pager,
    })
}

/// The pager the engine calls, from the config: the single `pager` when no named `pagers`
/// are declared, else a [`Router`] over them. With `tee_console`, pages also reach `console`
/// unless a configured pager already prints there (the demo keeps its story readable).
pub fn build(
    cfg: &Config,
    console: Arc<ConsolePager>,
    tee_console: bool,
) -> Result<Arc<dyn Pager>, PageError> {
    if cfg.pagers.is_empty() {
        // The single pager is named by its kind (`pager webhook failed: …`).
        let one = build_one(cfg.pager.kind(), "pager", &cfg.pager, &console)?;
        if tee_console && !matches!(cfg.pager, PagerConfig::Console) {
            let mut pagers = BTreeMap::new();
            pagers.insert(cfg.pager.kind().to_string(), one);
            return Ok(Arc::new(
                Router::new(pagers, BTreeMap::new(), None).with_tee(console),
            ));
        }
        return Ok(one);
    }
    let mut pagers = BTreeMap::new();
    for (name, p) in &cfg.pagers {
        pagers.insert(
            name.clone(),
            build_one(name, &format!("pagers.{name}"), p, &console)?,
        );
    }
    let mut router = Router::new(pagers, cfg.routes.clone(), cfg.default_route.clone());
    if tee_console
        && !cfg
            .pagers
            .values()
            .any(|p| matches!(p, PagerConfig::Console))
    {
        router = router.with_tee(console);
    }
    Ok(Arc::new(router))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::detect::Severity;
    use crate::notify::PageAction;

    struct Recorder {
        name: String,
        fail: bool,
        got: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Pager for Recorder {
        fn name(&self) -> &str {
            &self.name
        }
        async fn send(&self, page: &Page) -> Result<(), PageError> {
            if let Ok(mut g) = self.got.lock() {
                g.push(page.dedup_key.clone());
            }
            if self.fail {
                return Err(PageError::Delivery {
                    pager: self.name.clone(),
                    message: "down".into(),
                });
            }
            Ok(())
        }
    }

    fn rec(name: &str, fail: bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.into(),
            fail,
            got: Mutex::new(Vec::new()),
        })
    }

    fn page(route: &str) -> Page {
        Page {
            dedup_key: "babysitter/inc-1".into(),
            severity: Severity::Error,
            incident: "inc-1".into(),
            route: route.into(),
            ..Page::sample(PageAction::Trigger)
        }
    }

    #[tokio::test]
    async fn routes_fan_out_and_report_each_failure() {
        let (pd, slack, hook) = (rec("pd", false), rec("slack", true), rec("hook", false));
        let mut pagers: BTreeMap<String, Arc<dyn Pager>> = BTreeMap::new();
        pagers.insert("pd".into(), pd.clone());
        pagers.insert("slack".into(), slack.clone());
        pagers.insert("hook".into(), hook.clone());
        let mut routes = BTreeMap::new();
        routes.insert(
            "ml".to_string(),
            vec!["pd".to_string(), "slack".to_string()],
        );
        let r = Router::new(pagers, routes, Some("hook".into()));

        assert_eq!(r.targets("ml"), vec!["pd", "slack"]);
        assert_eq!(r.targets("pd"), vec!["pd"]);
        assert_eq!(r.targets("nobody"), vec!["hook"]);

        let err = r.send(&page("ml")).await.unwrap_err().to_string();
        assert!(err.contains("route `ml`: 1 failed"), "{err}");
        assert!(err.contains("pager slack failed: down"), "{err}");
        assert!(err.contains("delivered to pd"), "{err}");
        assert_eq!(pd.got.lock().unwrap().len(), 1);
        assert!(hook.got.lock().unwrap().is_empty());

        r.send(&page("elsewhere")).await.unwrap();
        assert_eq!(hook.got.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unresolvable_route_without_default_pages_everyone() {
        let (a, b) = (rec("a", false), rec("b", false));
        let mut pagers: BTreeMap<String, Arc<dyn Pager>> = BTreeMap::new();
        pagers.insert("a".into(), a.clone());
        pagers.insert("b".into(), b.clone());
        let r = Router::new(pagers, BTreeMap::new(), None);
        r.send(&page("x")).await.unwrap();
        assert_eq!(a.got.lock().unwrap().len(), 1);
        assert_eq!(b.got.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_single_remote_pager_is_teed_to_the_console_in_the_demo() {
        let cfg = Config {
            pager: PagerConfig::Webhook(crate::config::WebhookConfig {
                url: "http://127.0.0.1:9/hook".into(),
                secret: crate::config::Secret::Value("k".into()),
                delivery: crate::config::DeliveryConfig {
                    attempts: 1,
                    ..Default::default()
                },
            }),
            ..Config::default()
        };
        let console = ConsolePager::new();
        let p = build(&cfg, console.clone(), true).unwrap();
        assert_eq!(p.name(), "router");
        // The webhook is down; the console still shows the page and the error names the webhook.
        let err = p.send(&page("default")).await.unwrap_err().to_string();
        assert!(err.contains("pager webhook failed"), "{err}");
        assert!(err.contains("delivered to console"), "{err}");
        assert_eq!(console.sent().len(), 1);
        // Without the tee (serve), the webhook alone.
        assert_eq!(
            build(&cfg, ConsolePager::new(), false).unwrap().name(),
            "webhook"
        );
        // Errors name the config path of the single pager.
        let mut unset = cfg.clone();
        if let PagerConfig::Webhook(w) = &mut unset.pager {
            w.secret = crate::config::Secret::Env("ROUTER_TEST_UNSET_SECRET".into());
        }
        let err = build(&unset, ConsolePager::new(), false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("pager.secret: environment variable `ROUTER_TEST_UNSET_SECRET`"),
            "{err}"
        );
    }

    #[test]
    fn default_config_builds_the_console() {
        let cfg = Config::default();
        let p = build(&cfg, ConsolePager::new(), true).unwrap();
        assert_eq!(p.name(), "console");
    }
}
