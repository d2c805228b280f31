//! Property-based fuzzing (proptest) of the parsers that read outside input: the config file
//! (TOML and YAML, through `Config::load` with its validation), runbooks (front matter and
//! Markdown, through `RunbookSet::from_sources`), tokens files, and API request bodies (through
//! the router, so the real request types' serde and validation run). Inputs are random edits of
//! valid documents (so they get deep into the parsers) and random text. Property: no panic;
//! the API answers every body with a 2xx or 4xx JSON response, never a 5xx.

mod common;

use axum::body::Body;
use axum::http::Request;
use babysitter::config::Config;
use babysitter::runbook::RunbookSet;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use tower::ServiceExt;

/// One random edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, u8),
    Replace(usize, u8),
    Truncate(usize),
    /// Copies a slice to another place (duplicated keys, sections, fences).
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Bytes that matter to TOML, YAML, JSON and Markdown front matter.
    let special = prop::sample::select(b"=:-[]{}\"'#\n \t,.0123456789|>*&!%@`\\".to_vec());
    let byte = prop_oneof![special, any::<u8>()];
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte.clone()).prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), byte).prop_map(|(p, b)| Edit::Replace(p, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>(), 0usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> String {
    let mut b = base.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match *e {
            Edit::Delete(p) if !b.is_empty() => {
                b.remove(p % b.len());
            }
            Edit::Insert(p, x) => b.insert(p % (b.len() + 1), x),
            Edit::Replace(p, x) if !b.is_empty() => {
                let i = p % b.len();
                b[i] = x;
            }
            Edit::Truncate(p) => b.truncate(p % len),
            Edit::Splice(from, to, n) if !b.is_empty() => {
                let from = from % b.len();
                let end = (from + n).min(b.len());
                let piece = b[from..end].to_vec();
                let at = to % (b.len() + 1);
                b.splice(at..at, piece);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..8).prop_map(move |e| apply(base, &e)),
        1 => ".{0,400}",
    ]
}

const TOML_EXAMPLE: &str = include_str!("../examples/babysitter.toml");
const PAGING_EXAMPLE: &str = include_str!("../examples/paging.toml");

/// The TOML example as JSON text (valid YAML), for YAML mutations.
fn yaml_example() -> &'static str {
    static YAML: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    YAML.get_or_init(|| {
        let v: toml::Value = toml::from_str(PAGING_EXAMPLE).expect("example parses");
        serde_json::to_string_pretty(&v).expect("to json")
    })
}

fn cases(n: u32) -> PropConfig {
    PropConfig {
        cases: n,
        failure_persistence: None,
        ..PropConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_toml_never_panics(text in prop_oneof![mutated(TOML_EXAMPLE), mutated(PAGING_EXAMPLE)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).expect("write");
        if let Err(e) = Config::load(Some(&path)) {
            // Errors name the file.
            prop_assert!(e.to_string().contains("c.toml") || e.to_string().starts_with("configuration:"), "{e}");
        }
        let _ = toml::from_str::<Config>(&text);
    }

    #[test]
    fn config_yaml_never_panics(text in prop_oneof![mutated(yaml_example()), ".{0,300}"]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, &text).expect("write");
        let _ = Config::load(Some(&path));
    }

    #[test]
    fn tokens_file_never_panics(text in mutated("# tokens\nci:operator:0f343b0931126a20f133d67c2b018a3b5a0c3c9a2e1b9a6ce2c1b1d0c1a2b3c4\nops:admin:ABCDEF\n")) {
        let _ = babysitter::config::parse_tokens_file(std::path::Path::new("tokens"), &text);
        let _ = babysitter::config::parse_tokens_file(std::path::Path::new("tokens.yaml"), &text);
    }

    #[test]
    fn runbooks_never_panic(
        spike in mutated(include_str!("../runbooks/loss-spike.md")),
        hang in mutated(include_str!("../runbooks/hang.md")),
        gpu in mutated(include_str!("../runbooks/gpu-hardware-error.md")),
    ) {
        for (name, text) in [("loss-spike.md", &spike), ("hang.md", &hang), ("gpu-hardware-error.md", &gpu)] {
            match RunbookSet::from_sources(&[(format!("runbooks/{name}"), text.as_str())]) {
                Ok(set) => prop_assert_eq!(set.len(), 1),
                Err(errs) => {
                    // Every error names the file.
                    let shown = errs.to_string();
                    prop_assert!(shown.contains(name), "{}", shown);
                }
            }
        }
    }
}

/// Random JSON values (bodies that parse as JSON but have any shape).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        prop::sample::select(vec!["run-h", "", "run", "by", "reason", "dry_run", " "])
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "run".to_string(),
                    "by".to_string(),
                    "reason".to_string(),
                    "dry_run".to_string(),
                    "x".to_string(),
                ]),
                inner,
                0..5,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        2 => mutated(r#"{"run": "run-h", "dry_run": true, "by": "me", "reason": "why"}"#),
        1 => ".{0,200}",
    ]
}

#[tokio::test]
async fn api_bodies_never_panic_nor_give_5xx() {
    let h = common::Harness::new(vec![("run-h", vec![])], |_| {}).await;
    let router = babysitter::api::router(h.engine.clone());
    let mut runner = TestRunner::new(cases(300));
    let strategy = (
        prop::sample::select(vec![
            "/api/v1/runbooks/hang/execute",
            "/api/v1/runbooks/nope/execute",
            "/api/v1/actions/inc-1-a0-s0/approve",
            "/api/v1/actions/x/reject",
        ]),
        body(),
    );
    for _ in 0..300 {
        let (uri, body) = strategy
            .new_tree(&mut runner)
            .expect("generate a case")
            .current();
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/json")
            .header(
                "authorization",
                format!("Bearer {}", common::OPERATOR_TOKEN),
            )
            .body(Body::from(body.clone()))
            .expect("request");
        let res = router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        assert!(
            status.is_success() || status.is_client_error(),
            "{uri} {body:?} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
    }
}
