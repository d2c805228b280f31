//! The hash chain: canonical JSON for payloads and the exact bytes an entry's hash covers.
//!
//! Pure functions, no I/O, so an external verifier can reimplement them from this file alone:
//!
//! ```text
//! hash = hex(sha256(JSON array [seq, ts, kind, run, incident, actor, payload, prev_hash]))
//! ```
//!
//! serialized without whitespace, where `seq` is a JSON integer, `run` and `incident` are strings
//! or `null`, `payload` is the *stored payload text* (itself canonical JSON, see [`canonical_json`])
//! as a JSON string, and every other field is a JSON string. A JSON array of typed, quoted and
//! escaped values is unambiguous: two different entries never produce the same bytes.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Canonical JSON text of a value: object keys sorted by their UTF-8 bytes (recursively), no
/// whitespace, strings escaped as serde_json does, numbers in serde_json's shortest round-trip form.
///
/// Does not rely on `serde_json::Map` being sorted: another crate in the build may enable
/// serde_json's `preserve_order` feature, which would change iteration order silently.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // `Number`'s Display is its JSON form (integers exact, floats shortest round-trip).
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    // Serializing a `str` cannot fail; the fallback keeps this total without a panic path.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// The fields an entry's hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub seq: i64,
    pub ts: &'a str,
    /// The kind as stored (snake_case), so a row with an unknown kind can still be hashed.
    pub kind: &'a str,
    pub run: Option<&'a str>,
    pub incident: Option<&'a str>,
    pub actor: &'a str,
    /// The stored payload text (canonical JSON at append time).
    pub payload: &'a str,
    pub prev_hash: &'a str,
}

/// The exact bytes that are hashed (see the module docs).
pub fn canonical_bytes(input: &HashInput<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(
        64 + input.ts.len() + input.kind.len() + input.actor.len() + input.payload.len() + 64,
    );
    out.push('[');
    let _ = write!(out, "{}", input.seq);
    out.push(',');
    write_json_string(input.ts, &mut out);
    out.push(',');
    write_json_string(input.kind, &mut out);
    out.push(',');
    write_opt(input.run, &mut out);
    out.push(',');
    write_opt(input.incident, &mut out);
    out.push(',');
    write_json_string(input.actor, &mut out);
    out.push(',');
    write_json_string(input.payload, &mut out);
    out.push(',');
    write_json_string(input.prev_hash, &mut out);
    out.push(']');
    out.into_bytes()
}

fn write_opt(value: Option<&str>, out: &mut String) {
    match value {
        Some(s) => write_json_string(s, out),
        None => out.push_str("null"),
    }
}

/// Lower-case hex SHA-256 of an entry's canonical bytes.
pub fn entry_hash(input: &HashInput<'_>) -> String {
    hex::encode(Sha256::digest(canonical_bytes(input)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input<'a>(run: Option<&'a str>, incident: Option<&'a str>) -> HashInput<'a> {
        HashInput {
            seq: 7,
            ts: "2026-11-02T10:00:00.123Z",
            kind: "decision",
            run,
            incident,
            actor: "policy",
            payload: r#"{"a":1}"#,
            prev_hash: GENESIS_HASH,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_recursively_and_drops_whitespace() {
        let v = json!({"b": [3, {"z": true, "a": null}], "a": "x\"y", "é": 1.5, "A": -2});
        assert_eq!(
            canonical_json(&v),
            r#"{"A":-2,"a":"x\"y","b":[3,{"a":null,"z":true}],"é":1.5}"#
        );
    }

    #[test]
    fn canonical_json_round_trips_to_the_same_text() {
        let v = json!({"loss": 0.1 + 0.2, "step": 9007199254740993_u64, "neg": -1e-300});
        let text = canonical_json(&v);
        let back: serde_json::Value = serde_json::from_str(&text).expect("canonical JSON parses");
        assert_eq!(canonical_json(&back), text);
    }

    #[test]
    fn canonical_bytes_are_a_json_array_of_the_fields_in_order() {
        let bytes = canonical_bytes(&input(Some("r1"), None));
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            format!(
                r#"[7,"2026-11-02T10:00:00.123Z","decision","r1",null,"policy","{{\"a\":1}}","{GENESIS_HASH}"]"#
            )
        );
    }

    #[test]
    fn absent_and_empty_and_shifted_fields_hash_differently() {
        let none = entry_hash(&input(None, None));
        let empty = entry_hash(&input(Some(""), None));
        let run_only = entry_hash(&input(Some("x"), None));
        let incident_only = entry_hash(&input(None, Some("x")));
        assert_ne!(none, empty);
        assert_ne!(run_only, incident_only);
        // Moving a character from one field to the next must change the hash.
        let mut a = input(Some("ab"), Some("c"));
        let mut b = input(Some("a"), Some("bc"));
        assert_ne!(entry_hash(&a), entry_hash(&b));
        a.actor = "x,y";
        b.actor = "x";
        assert_ne!(entry_hash(&a), entry_hash(&b));
    }

    #[test]
    fn hash_is_known_sha256() {
        // sha256 of the canonical bytes, computed independently:
        // printf '%s' '[1,"t","started",null,null,"babysitter","{}","000…0"]' | sha256sum
        let h = entry_hash(&HashInput {
            seq: 1,
            ts: "t",
            kind: "started",
            run: None,
            incident: None,
            actor: "babysitter",
            payload: "{}",
            prev_hash: GENESIS_HASH,
        });
        assert_eq!(h.len(), 64);
        assert_eq!(h, EXPECTED_FIRST);
    }

    const EXPECTED_FIRST: &str = "7e67604e49acbb410a63fcd889e426efa9197dc25a8fb3eeb8fb53f5f56ce13a";
}
