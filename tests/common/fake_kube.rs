//! A fake Kubernetes API server on loopback (axum on 127.0.0.1:0) that speaks enough of the
//! real protocol for the real `kube::Client`, kube-runtime watcher and kube-lease-manager:
//!
//! - list (`GET …/{plural}`, cluster-wide or namespaced) with a `resourceVersion`;
//! - `?watch=true`: newline-delimited JSON events (ADDED / MODIFIED / DELETED) from the given
//!   `resourceVersion`, periodic BOOKMARKs, ended after `timeoutSeconds`;
//! - GET / POST (409 AlreadyExists) / PUT (409 Conflict on a stale `resourceVersion`) /
//!   DELETE of one object; PATCH as JSON merge patch (via json-patch), strategic merge (as a
//!   merge patch: enough for flat objects like Leases), JSON patch, and server-side apply
//!   with field ownership: applying a field another field manager set to a different value is a
//!   409 Conflict, which is what makes a Lease exclusive; `?dryRun=All` stores nothing;
//! - a resource that is not served (a CRD not installed) answers 404;
//! - `labelSelector` / `fieldSelector` equality terms (`a=b,c=d`) filter lists and
//!   DELETE of a collection (`deletecollection`), which answers with the deleted objects
//!   (watches are not filtered);
//! - `GET …/pods/{name}/log` answers the text set with [`FakeKube::set_log`];
//! - [`FakeKube::hold`] makes matching requests take effect but never answer (a replica that
//!   dies while its request is in flight).
//!
//! Every request is logged (method, path, query, content type, body) for assertions.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// A resource type the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

impl Resource {
    pub const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        kind: &'static str,
    ) -> Resource {
        Resource {
            group,
            version,
            plural,
            kind,
        }
    }

    fn id(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const JOBS: Resource = Resource::new("batch", "v1", "jobs", "Job");
pub const JOBSETS: Resource = Resource::new("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet");
pub const PYTORCHJOBS: Resource = Resource::new("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob");
pub const TRAINJOBS: Resource =
    Resource::new("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob");
pub const LEASES: Resource = Resource::new("coordination.k8s.io", "v1", "leases", "Lease");
pub const EVENTS: Resource = Resource::new("", "v1", "events", "Event");
/// The Events babysitter posts (`events.k8s.io/v1`).
pub const NEW_EVENTS: Resource = Resource::new("events.k8s.io", "v1", "events", "Event");
pub const PODS: Resource = Resource::new("", "v1", "pods", "Pod");
pub const CONFIGMAPS: Resource = Resource::new("", "v1", "configmaps", "ConfigMap");

/// One logged request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Who sent it: the name given to [`FakeKube::client_as`] (empty for [`FakeKube::client`]).
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
struct WatchEv {
    rv: u64,
    res: String,
    ns: String,
    kind: &'static str,
    object: Value,
}

type Key = (String, String, String);

struct Store {
    rv: u64,
    served: Vec<Resource>,
    objects: BTreeMap<Key, Value>,
    /// Field owners per object: leaf path → field manager.
    owners: HashMap<Key, HashMap<String, String>>,
    history: Vec<WatchEv>,
    requests: Vec<Request>,
    /// Pod logs by (namespace, pod).
    logs: HashMap<(String, String), String>,
    /// Requests (method, path) that take effect but are never answered.
    holds: Vec<(String, String)>,
}

#[derive(Clone)]
pub struct FakeKube {
    pub url: String,
    store: Arc<Mutex<Store>>,
    tx: broadcast::Sender<WatchEv>,
}

impl FakeKube {
    /// Serves Jobs, Leases, Events (core and events.k8s.io), Pods and ConfigMaps (no CRDs
    /// installed).
    pub async fn start() -> FakeKube {
        Self::serving(vec![JOBS, LEASES, EVENTS, NEW_EVENTS, PODS, CONFIGMAPS]).await
    }

    pub async fn serving(served: Vec<Resource>) -> FakeKube {
        let (tx, _) = broadcast::channel(4096);
        let store = Arc::new(Mutex::new(Store {
            rv: 1,
            served,
            objects: BTreeMap::new(),
            owners: HashMap::new(),
            history: Vec::new(),
            requests: Vec::new(),
            logs: HashMap::new(),
            holds: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeKube { url, store, tx };
        fake.serve(listener, "");
        fake
    }

    /// Serves the same store on `listener`, logging requests as sent by `who`.
    fn serve(&self, listener: tokio::net::TcpListener, who: &str) {
        let f = self.clone();
        let who = who.to_string();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let f = f.clone();
                let who = who.clone();
                async move {
                    let held = f.is_held(&method, uri.path());
                    let res = f.handle(&who, method, uri, headers, body);
                    if held {
                        // It took effect; the caller never hears back.
                        std::future::pending::<()>().await;
                    }
                    res
                }
            },
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    /// A client that talks plain HTTP to the fake, namespace `default`.
    pub fn client(&self) -> kube::Client {
        Self::client_for(&self.url)
    }

    /// A client of the same fake (same objects) through its own port, so every request it
    /// sends is logged with `client == who`: which replica did what.
    pub async fn client_as(&self, who: &str) -> kube::Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        self.serve(listener, who);
        Self::client_for(&url)
    }

    fn client_for(url: &str) -> kube::Client {
        let cfg = kube::Config::new(url.parse().expect("fake URL"));
        kube::Client::try_from(cfg).expect("kube client")
    }

    /// Creates or replaces an object (the test acting as a user or a controller).
    pub fn put(&self, res: &Resource, mut obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        obj["metadata"]["namespace"] = json!(ns);
        let mut st = self.store.lock().unwrap();
        let key = (res.id(), ns, name);
        let kind = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.store_obj(&mut st, key, obj, kind)
    }

    /// Merges `status` into an object's status (a controller reporting progress).
    pub fn set_status(&self, res: &Resource, ns: &str, name: &str, status: Value) {
        let mut st = self.store.lock().unwrap();
        let key = (res.id(), ns.to_string(), name.to_string());
        let mut obj = st.objects.get(&key).cloned().expect("object to update");
        json_patch::merge(&mut obj, &json!({ "status": status }));
        self.store_obj(&mut st, key, obj, "MODIFIED");
    }

    pub fn delete(&self, res: &Resource, ns: &str, name: &str) -> bool {
        let mut st = self.store.lock().unwrap();
        self.delete_obj(&mut st, &(res.id(), ns.to_string(), name.to_string()))
            .is_some()
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        let st = self.store.lock().unwrap();
        st.objects
            .get(&(res.id(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a resource.
    pub fn list(&self, res: &Resource) -> Vec<Value> {
        let id = res.id();
        let st = self.store.lock().unwrap();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.store.lock().unwrap().requests.clone()
    }

    /// The text `GET …/pods/{pod}/log` answers.
    pub fn set_log(&self, ns: &str, pod: &str, text: &str) {
        self.store
            .lock()
            .unwrap()
            .logs
            .insert((ns.to_string(), pod.to_string()), text.to_string());
    }

    /// From now on, a `method` request to `path` takes effect but is never answered.
    pub fn hold(&self, method: &str, path: &str) {
        self.store
            .lock()
            .unwrap()
            .holds
            .push((method.to_string(), path.to_string()));
    }

    /// Answers every request again.
    pub fn release_holds(&self) {
        self.store.lock().unwrap().holds.clear();
    }

    fn is_held(&self, method: &Method, path: &str) -> bool {
        self.store
            .lock()
            .unwrap()
            .holds
            .iter()
            .any(|(m, p)| m == method.as_str() && p == path)
    }

    fn store_obj(&self, st: &mut Store, key: Key, mut obj: Value, kind: &'static str) -> Value {
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-11-25T00:00:00Z");
        }
        let ev = WatchEv {
            rv,
            res: key.0.clone(),
            ns: key.1.clone(),
            kind,
            object: obj.clone(),
        };
        st.objects.insert(key, obj.clone());
        st.history.push(ev.clone());
        let _ = self.tx.send(ev);
        obj
    }

    fn delete_obj(&self, st: &mut Store, key: &Key) -> Option<Value> {
        let mut obj = st.objects.remove(key)?;
        st.owners.remove(key);
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let ev = WatchEv {
            rv,
            res: key.0.clone(),
            ns: key.1.clone(),
            kind: "DELETED",
            object: obj.clone(),
        };
        st.history.push(ev.clone());
        let _ = self.tx.send(ev);
        Some(obj)
    }

    fn handle(
        &self,
        who: &str,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let query: HashMap<String, String> = uri
            .query()
            .map(|q| {
                q.split('&')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), percent_decode(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let parsed: Option<Value> = if body.is_empty() {
            None
        } else {
            // Apply patches are YAML by content type; kube sends JSON, which is YAML too.
            serde_json::from_slice(&body).ok()
        };
        self.store.lock().unwrap().requests.push(Request {
            client: who.to_string(),
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            content_type: content_type.clone(),
            body: parsed.clone(),
        });
        let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return status(404, "NotFound", &format!("no route {}", uri.path())),
        };
        let (ns, plural, name) = match rest {
            [plural] => (None, *plural, None),
            ["namespaces", ns, plural] => (Some(*ns), *plural, None),
            ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
            ["namespaces", ns, "pods", name, "log"] if group.is_empty() => {
                let st = self.store.lock().unwrap();
                let key = ("/v1/pods".to_string(), ns.to_string(), name.to_string());
                if !st.objects.contains_key(&key) {
                    return status(404, "NotFound", &format!("pods \"{name}\" not found"));
                }
                let text = st
                    .logs
                    .get(&(ns.to_string(), name.to_string()))
                    .cloned()
                    .unwrap_or_default();
                let tail = query
                    .get("tailLines")
                    .and_then(|t| t.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                let lines: Vec<&str> = text.lines().collect();
                let kept = lines[lines.len().saturating_sub(tail)..].join("\n");
                return (StatusCode::OK, [("content-type", "text/plain")], kept).into_response();
            }
            _ => return status(404, "NotFound", &format!("no route {}", uri.path())),
        };
        let res = {
            let st = self.store.lock().unwrap();
            st.served
                .iter()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
                .cloned()
        };
        let Some(res) = res else {
            return status(
                404,
                "NotFound",
                &format!(
                    "the server could not find the requested resource ({group}/{version} {plural})"
                ),
            );
        };
        let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
        let manager = query.get("fieldManager").cloned();
        match (method, name) {
            (Method::GET, None) if query.get("watch").is_some_and(|v| v == "true" || v == "1") => {
                let from = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let timeout = query
                    .get("timeoutSeconds")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(290);
                self.watch(&res, ns.map(str::to_string), from, timeout)
            }
            (Method::GET, None) => {
                let st = self.store.lock().unwrap();
                let id = res.id();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.0 == id && ns.is_none_or(|n| k.1 == n) && selected(v, &query)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                let limit = query.get("limit").and_then(|l| l.parse::<usize>().ok());
                let items: Vec<Value> = match limit {
                    Some(l) if l > 0 => items.into_iter().take(l).collect(),
                    _ => items,
                };
                json_response(
                    200,
                    json!({
                        "apiVersion": res.api_version(), "kind": format!("{}List", res.kind),
                        "metadata": {"resourceVersion": st.rv.to_string()},
                        "items": items,
                    }),
                )
            }
            (Method::DELETE, None) => {
                let id = res.id();
                let mut st = self.store.lock().unwrap();
                let keys: Vec<Key> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| {
                        k.0 == id && ns.is_none_or(|n| k.1 == n) && selected(v, &query)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut gone = vec![];
                for k in keys {
                    if dry_run {
                        gone.extend(st.objects.get(&k).cloned());
                    } else {
                        gone.extend(self.delete_obj(&mut st, &k));
                    }
                }
                json_response(
                    200,
                    json!({
                        "apiVersion": res.api_version(), "kind": format!("{}List", res.kind),
                        "metadata": {"resourceVersion": st.rv.to_string()},
                        "items": gone,
                    }),
                )
            }
            (Method::POST, None) => {
                let Some(mut obj) = parsed else {
                    return status(400, "BadRequest", "no body");
                };
                let ns = ns.unwrap_or("default").to_string();
                let Some(name) = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| {
                        obj["metadata"]["generateName"]
                            .as_str()
                            .map(|g| format!("{g}{}", self.store.lock().unwrap().rv + 1))
                    })
                else {
                    return status(422, "Invalid", "metadata.name: Required value");
                };
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["namespace"] = json!(ns);
                obj["apiVersion"] = json!(res.api_version());
                obj["kind"] = json!(res.kind);
                let key = (res.id(), ns, name.clone());
                let mut st = self.store.lock().unwrap();
                if st.objects.contains_key(&key) {
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("{} \"{name}\" already exists", res.plural),
                    );
                }
                if dry_run {
                    return json_response(201, obj);
                }
                let stored = self.store_obj(&mut st, key, obj, "ADDED");
                json_response(201, stored)
            }
            (method, Some(name)) => {
                let key = (
                    res.id(),
                    ns.unwrap_or("default").to_string(),
                    name.to_string(),
                );
                let mut st = self.store.lock().unwrap();
                let current = st.objects.get(&key).cloned();
                match method {
                    Method::GET => match current {
                        Some(o) => json_response(200, o),
                        None => not_found(&res, name),
                    },
                    Method::DELETE => {
                        if current.is_none() {
                            return not_found(&res, name);
                        }
                        if dry_run {
                            return json_response(200, current.unwrap_or_default());
                        }
                        let gone = self.delete_obj(&mut st, &key).unwrap_or_default();
                        json_response(200, gone)
                    }
                    Method::PUT => {
                        let Some(cur) = current else {
                            return not_found(&res, name);
                        };
                        let Some(mut obj) = parsed else {
                            return status(400, "BadRequest", "no body");
                        };
                        let sent = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
                        if !sent.is_empty()
                            && Some(sent) != cur["metadata"]["resourceVersion"].as_str()
                        {
                            return status(
                                409,
                                "Conflict",
                                &format!(
                                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                                    res.plural
                                ),
                            );
                        }
                        obj["metadata"]["uid"] = cur["metadata"]["uid"].clone();
                        obj["metadata"]["namespace"] = json!(key.1);
                        if dry_run {
                            return json_response(200, obj);
                        }
                        let stored = self.store_obj(&mut st, key, obj, "MODIFIED");
                        json_response(200, stored)
                    }
                    Method::PATCH => {
                        let Some(patch) = parsed else {
                            return status(400, "BadRequest", "no body");
                        };
                        let ct = content_type.unwrap_or_default();
                        let apply = ct.starts_with("application/apply-patch");
                        let force = query.get("force").is_some_and(|v| v == "true");
                        let exists = current.is_some();
                        let mut obj = match current {
                            Some(o) => o,
                            None if apply => json!({
                                "apiVersion": res.api_version(), "kind": res.kind,
                                "metadata": {"name": name, "namespace": key.1},
                            }),
                            None => return not_found(&res, name),
                        };
                        if apply && !force {
                            let owners = st.owners.get(&key).cloned().unwrap_or_default();
                            for (path, value) in leaves(&patch, "") {
                                if path.starts_with("/metadata")
                                    || path == "/apiVersion"
                                    || path == "/kind"
                                {
                                    continue;
                                }
                                let cur = obj.pointer(&path).cloned().unwrap_or(Value::Null);
                                let owner = owners.get(&path);
                                if !cur.is_null()
                                    && cur != value
                                    && owner.is_some_and(|o| Some(o) != manager.as_ref())
                                {
                                    return status(
                                        409,
                                        "Conflict",
                                        &format!(
                                            "Apply failed with 1 conflict: conflict with \"{}\": {path}",
                                            owner.cloned().unwrap_or_default()
                                        ),
                                    );
                                }
                            }
                        }
                        if ct.starts_with("application/json-patch") {
                            let ops: json_patch::Patch = match serde_json::from_value(patch.clone())
                            {
                                Ok(p) => p,
                                Err(e) => return status(400, "BadRequest", &e.to_string()),
                            };
                            if let Err(e) = json_patch::patch(&mut obj, &ops) {
                                return status(422, "Invalid", &e.to_string());
                            }
                        } else {
                            json_patch::merge(&mut obj, &patch);
                        }
                        obj["metadata"]["name"] = json!(name);
                        obj["metadata"]["namespace"] = json!(key.1);
                        if dry_run {
                            return json_response(200, obj);
                        }
                        if let Some(m) = &manager {
                            let owners = st.owners.entry(key.clone()).or_default();
                            for (path, value) in leaves(&patch, "") {
                                if value.is_null() {
                                    owners.remove(&path);
                                } else {
                                    owners.insert(path, m.clone());
                                }
                            }
                        }
                        let kind = if exists { "MODIFIED" } else { "ADDED" };
                        let stored = self.store_obj(&mut st, key, obj, kind);
                        json_response(200, stored)
                    }
                    _ => status(405, "MethodNotAllowed", "method not allowed"),
                }
            }
            _ => status(405, "MethodNotAllowed", "method not allowed"),
        }
    }

    /// A watch stream: events after `from`, then live ones, bookmarks every 500 ms.
    fn watch(&self, res: &Resource, ns: Option<String>, from: u64, timeout: u64) -> Response {
        let id = res.id();
        let matches = {
            let id = id.clone();
            move |e: &WatchEv| e.res == id && ns.as_ref().is_none_or(|n| &e.ns == n)
        };
        let (mut live, backlog, mut seen) = {
            let st = self.store.lock().unwrap();
            let live = self.tx.subscribe();
            let backlog: Vec<WatchEv> = st
                .history
                .iter()
                .filter(|e| e.rv > from && matches(e))
                .cloned()
                .collect();
            (live, backlog, st.rv.max(from))
        };
        let api_version = res.api_version();
        let kind = res.kind;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        let line = |v: Value| {
            let mut s = v.to_string();
            s.push('\n');
            Bytes::from(s)
        };
        tokio::spawn(async move {
            for e in backlog {
                if tx
                    .send(line(json!({"type": e.kind, "object": e.object})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                let msg = tokio::select! {
                    ev = live.recv() => match ev {
                        Ok(e) => {
                            if e.rv <= seen {
                                continue;
                            }
                            seen = e.rv;
                            if !matches(&e) {
                                continue;
                            }
                            json!({"type": e.kind, "object": e.object})
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Too far behind: the client must re-list, as with a real server.
                            json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}})
                        }
                        Err(_) => return,
                    },
                    _ = tick.tick() => json!({
                        "type": "BOOKMARK",
                        "object": {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": seen.to_string()}},
                    }),
                    _ = &mut deadline => return,
                };
                if tx.send(line(msg)).await.is_err() {
                    return;
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    }
}

/// Does `obj` match the equality terms of the request's `labelSelector` and `fieldSelector`?
fn selected(obj: &Value, query: &HashMap<String, String>) -> bool {
    let terms = |key: &str| -> Vec<(String, String)> {
        query
            .get(key)
            .map(|s| {
                s.split(',')
                    .filter(|t| !t.is_empty())
                    .filter_map(|t| t.split_once('='))
                    .map(|(k, v)| (k.trim_end_matches('=').to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let labels_ok = terms("labelSelector")
        .iter()
        .all(|(k, v)| obj["metadata"]["labels"].get(k).and_then(Value::as_str) == Some(v.as_str()));
    let fields_ok = terms("fieldSelector").iter().all(|(k, v)| {
        let mut cur = obj;
        for seg in k.split('.') {
            cur = &cur[seg];
        }
        cur.as_str() == Some(v.as_str())
    });
    labels_ok && fields_ok
}

/// Leaf paths (JSON pointers) of a patch: objects are walked, everything else is a leaf.
fn leaves(v: &Value, prefix: &str) -> Vec<(String, Value)> {
    match v {
        Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| {
                leaves(
                    v,
                    &format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            })
            .collect(),
        other => vec![(prefix.to_string(), other.clone())],
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(x) => {
                    out.push(x);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        }),
    )
}

fn not_found(res: &Resource, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.plural),
    )
}
