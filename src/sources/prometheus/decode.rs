//! Decoding of `query_range` responses straight into chart samples.
//!
//! prometheus-http-query builds the client and decodes instant queries, but its range-vector
//! decoder allocates a `HashMap<String, String>` per series and a `String` per sample value
//! before anything is kept. At 10,000 runs a 60 s poll is ≈14 MB of JSON and the start-up window
//! ≈220 MB, so the range path decodes the body in one pass: label names and values are borrowed
//! from the body, only the labels babysitter keeps (the run label and the template's own, e.g.
//! `rank`) are copied, and each `[t, "v"]` pair becomes a [`Sample`] directly. The response is
//! decoded in the task that fetched it, while other queries are still in flight.
//!
//! The shape is Prometheus' HTTP API (also Thanos, Mimir, VictoriaMetrics):
//! `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{…},"values":[[t,"v"],…]}]}}`
//! and, on failure, `{"status":"error","errorType":"…","error":"…"}`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::charts::Sample;

/// One series of a range query: the kept labels and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub samples: Vec<Sample>,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a body could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Prometheus answered `status: error` (its `errorType` and message).
    Api { error_type: String, error: String },
    /// Valid JSON of another result type (a query that is not a range vector).
    NotMatrix(String),
    /// Not the API's JSON at all.
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Api { error_type, error } => write!(f, "{error_type}: {error}"),
            DecodeError::NotMatrix(t) => write!(f, "expected a range vector (matrix), got {t}"),
            DecodeError::Malformed(m) => write!(f, "unreadable response: {m}"),
        }
    }
}

/// Decodes a `query_range` body, keeping only the labels named in `keep`.
pub fn range_response(body: &[u8], keep: &[&str]) -> Result<Vec<Series>, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let env = EnvelopeSeed { keep }
        .deserialize(&mut de)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    de.end()
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match env.status.as_deref() {
        Some("success") => {}
        Some("error") => {
            return Err(DecodeError::Api {
                error_type: env.error_type.unwrap_or_else(|| "error".into()),
                error: env.error.unwrap_or_default(),
            });
        }
        other => {
            return Err(DecodeError::Malformed(format!(
                "`status` is {other:?}, not \"success\" or \"error\""
            )));
        }
    }
    let data = env
        .data
        .ok_or_else(|| DecodeError::Malformed("`data` is missing".into()))?;
    match data.result_type.as_deref() {
        Some("matrix") => Ok(data.result.unwrap_or_default()),
        Some(t) => Err(DecodeError::NotMatrix(t.to_string())),
        None => Err(DecodeError::Malformed(
            "`data.resultType` is missing".into(),
        )),
    }
}

/// Decodes an error body (`status: error`), for non-2xx answers.
pub fn error_response(body: &[u8]) -> Option<(String, String)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct E {
        status: String,
        error_type: Option<String>,
        error: Option<String>,
    }
    let e: E = serde_json::from_slice(body).ok()?;
    (e.status == "error").then(|| {
        (
            e.error_type.unwrap_or_default(),
            e.error.unwrap_or_default(),
        )
    })
}

struct Envelope {
    status: Option<String>,
    error_type: Option<String>,
    error: Option<String>,
    data: Option<Data>,
}

struct Data {
    result_type: Option<String>,
    result: Option<Vec<Series>>,
}

struct EnvelopeSeed<'k> {
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Prometheus API response object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut env = Envelope {
            status: None,
            error_type: None,
            error: None,
            data: None,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "status" => env.status = Some(map.next_value()?),
                "errorType" => env.error_type = map.next_value()?,
                "error" => env.error = map.next_value()?,
                "data" => env.data = map.next_value_seed(DataSeed { keep: self.keep })?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(env)
    }
}

struct DataSeed<'k> {
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<Data>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Data>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Option<Data>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `data` object")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Data>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Data>, E> {
        Ok(None)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Data>, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Data>, A::Error> {
        let mut data = Data {
            result_type: None,
            result: None,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "resultType" => data.result_type = Some(map.next_value()?),
                // A matrix is an array of series; any other result type is read and dropped
                // (its `resultType` says what it was).
                "result" => {
                    data.result = map.next_value_seed(ResultSeed { keep: self.keep })?;
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(data))
    }
}

struct ResultSeed<'k> {
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for ResultSeed<'_> {
    type Value = Option<Vec<Series>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ResultSeed<'_> {
    type Value = Option<Vec<Series>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `result` array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(s) = seq.next_element_seed(SeriesSeed { keep: self.keep })? {
            if let Some(s) = s {
                out.push(s);
            }
        }
        Ok(Some(out))
    }
    // A scalar or string result (`[t, "v"]` is a seq too, but of numbers: see SeriesSeed).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Some(Vec::new()))
    }
}

struct SeriesSeed<'k> {
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for SeriesSeed<'_> {
    /// `None` for an element that is not a series object (a scalar result's `[t, "v"]`).
    type Value = Option<Series>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SeriesSeed<'_> {
    type Value = Option<Series>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a series object {metric, values}")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut series = Series {
            labels: Vec::new(),
            samples: Vec::new(),
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "metric" => series.labels = map.next_value_seed(LabelsSeed { keep: self.keep })?,
                "values" => series.samples = map.next_value_seed(SamplesSeed)?,
                _ => {
                    // `histograms` (native histograms) and anything newer: not charts.
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(Some(series))
    }
}

struct LabelsSeed<'k> {
    keep: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for LabelsSeed<'_> {
    type Value = Vec<(String, String)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LabelsSeed<'_> {
    type Value = Vec<(String, String)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a label set")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.keep.len());
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if self.keep.contains(&k.as_ref()) {
                let v: Cow<'de, str> = map.next_value()?;
                out.push((k.into_owned(), v.into_owned()));
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

struct SamplesSeed;

impl<'de> DeserializeSeed<'de> for SamplesSeed {
    type Value = Vec<Sample>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SamplesSeed {
    type Value = Vec<Sample>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of [timestamp, \"value\"] pairs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(64));
        while let Some(p) = seq.next_element::<Pair>()? {
            out.push(Sample::new(p.0, p.1));
        }
        Ok(out)
    }
}

/// `[1700000000.123, "0.5"]`: Prometheus sends values as strings so NaN and ±Inf survive JSON.
struct Pair(f64, f64);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Pair, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a [timestamp, \"value\"] pair")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                let t: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let v: Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                let v = parse_value(&v).ok_or_else(|| {
                    de::Error::invalid_value(de::Unexpected::Str(&v), &"a Prometheus sample value")
                })?;
                Ok(Pair(t, v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A sample value as Prometheus formats it: decimal or exponent notation, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => {
            let first = s.as_bytes().first()?;
            // Rust would also accept "inf"/"nan" spelled otherwise: Prometheus never sends them.
            if !(first.is_ascii_digit() || *first == b'-' || *first == b'+' || *first == b'.') {
                return None;
            }
            s.parse().ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_keeps_only_the_asked_labels_and_every_sample() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"run":"a","rank":"3","instance":"x:9400","job":"t"},"values":[[1700000000,"1.5"],[1700000015.5,"NaN"],[1700000030,"+Inf"],[1700000045,"-Inf"],[1700000060,"1e-3"]]},
            {"metric":{"run":"b\u00e9"},"values":[]}
        ]},"warnings":["x"]}"#;
        let s = range_response(body, &["run", "rank"]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].labels,
            vec![("run".into(), "a".into()), ("rank".into(), "3".into())]
        );
        assert_eq!(s[0].label("rank"), Some("3"));
        assert_eq!(s[0].label("instance"), None);
        let v: Vec<f64> = s[0].samples.iter().map(|p| p.v).collect();
        assert_eq!(v[0], 1.5);
        assert!(v[1].is_nan());
        assert_eq!(v[2], f64::INFINITY);
        assert_eq!(v[3], f64::NEG_INFINITY);
        assert_eq!(v[4], 0.001);
        assert_eq!(s[0].samples[1].t, 1700000015.5);
        // Escaped label values are decoded, not borrowed raw.
        assert_eq!(s[1].label("run"), Some("bé"));
        assert!(s[1].samples.is_empty());
    }

    #[test]
    fn errors_and_other_result_types_are_told_apart() {
        let e = range_response(
            br#"{"status":"error","errorType":"timeout","error":"query timed out"}"#,
            &["run"],
        )
        .unwrap_err();
        assert_eq!(
            e,
            DecodeError::Api {
                error_type: "timeout".into(),
                error: "query timed out".into()
            }
        );
        let e = range_response(
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#,
            &["run"],
        )
        .unwrap_err();
        assert_eq!(e, DecodeError::NotMatrix("vector".into()));
        let e = range_response(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
            &["run"],
        )
        .unwrap_err();
        assert_eq!(e, DecodeError::NotMatrix("scalar".into()));
        assert_eq!(
            error_response(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            Some(("bad_data".into(), "parse error".into()))
        );
        assert_eq!(error_response(b"<html>502</html>"), None);
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"<html>bad gateway</html>",
            br#"{"status":"success"}"#,
            br#"{"status":"success","data":{"result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"run":"a"},"values":[[1,"x"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"run":"a"},"values":[[1]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"run":"a"},"values":[[1,"2",3]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"run":"a"},"values":[["1","2"]]}]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[]}} trailing"#,
            br#"{"status":"weird","data":null}"#,
        ] {
            assert!(
                range_response(body, &["run"]).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn values_parse_as_prometheus_formats_them() {
        assert_eq!(parse_value("0"), Some(0.0));
        assert_eq!(parse_value("-2.5e+10"), Some(-2.5e10));
        assert_eq!(parse_value(".5"), Some(0.5));
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("nan"), None);
        assert_eq!(parse_value("inf"), None);
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value("1,5"), None);
    }
}
