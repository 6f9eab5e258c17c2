//! Protobuf wire-format walking for the gRPC hot path (pure: no I/O).
//!
//! A gRPC ingest request is `repeated InferenceEvent events = 1` (or
//! `LabelEvent`). Rather than decoding every event into owned strings and
//! maps and encoding it again for Kafka, the collector finds each event's
//! byte range in the request ([`events`]), reads the event into a borrowed
//! view ([`inference`], [`label`], from `mlwatch_proto::view`, which the
//! analyzer reads its topics with too) that validation checks, and
//! publishes the event's own bytes followed by the defaults validation
//! filled in (`validate::Fill`), which protobuf's last-field-wins rule makes
//! override. [`differential`] checks that this path and prost's agree.

pub use mlwatch_proto::view::{events, inference, label};

/// What the gRPC path does with one event's bytes, side by side with what
/// decoding it with prost and validating the decoded message does: both
/// must accept the same events, and the published bytes must decode to the
/// event the decoded path would publish. Used by the unit tests and the
/// `proto_events` fuzz target.
pub mod differential {
    use mlwatch_proto::v1::{InferenceEvent, LabelEvent};
    use prost::Message;

    use super::{inference, label};
    use crate::validate::{self, InferenceRef, Limits};

    /// Panics when the wire path and the prost path disagree on `bytes` as
    /// an `InferenceEvent`.
    pub fn check_inference(bytes: &[u8], limits: &Limits, now_ms: i64) {
        let mut view = InferenceRef::default();
        let wire = inference(bytes, &mut view).and_then(|()| validate::check_inference_ref(&view, limits, now_ms));
        let decoded = InferenceEvent::decode(bytes);
        let Ok(mut event) = decoded else {
            assert!(
                wire.is_err(),
                "prost rejects {bytes:?} ({decoded:?}) but the wire path accepts it"
            );
            return;
        };
        let checked = validate::inference_proto(0, &mut event, limits, now_ms);
        match (wire, checked) {
            (Ok(fill), Ok(())) => {
                let mut published = bytes.to_vec();
                fill.append_inference(&mut published);
                let republished = InferenceEvent::decode(&published[..]).expect("published bytes decode");
                assert_eq!(republished, event, "published bytes differ from the validated event");
            }
            (Err(w), Err(p)) => {
                // With several bad map entries, which one is named depends
                // on map order; elsewhere the answers are the same.
                let map = |f: &str| {
                    ["features", "tags", "prediction.scores"]
                        .iter()
                        .any(|m| f.starts_with(m))
                };
                if !map(&w.0) && !map(&p.field) {
                    assert_eq!((w.0.as_str(), w.1.as_str()), (p.field.as_str(), p.reason.as_str()));
                }
            }
            (w, p) => panic!("wire path {w:?} but prost path {p:?} for {bytes:?}"),
        }
    }

    /// The same for a `LabelEvent`.
    pub fn check_label(bytes: &[u8], limits: &Limits, now_ms: i64) {
        let wire = label(bytes).and_then(|l| validate::check_label_ref(&l, limits, now_ms));
        let Ok(mut event) = LabelEvent::decode(bytes) else {
            assert!(wire.is_err(), "prost rejects {bytes:?} but the wire path accepts it");
            return;
        };
        match (wire, validate::label_proto(0, &mut event, limits, now_ms)) {
            (Ok(fill), Ok(())) => {
                let mut published = bytes.to_vec();
                fill.append_label(&mut published);
                assert_eq!(
                    LabelEvent::decode(&published[..]).expect("published bytes decode"),
                    event
                );
            }
            (Err(w), Err(p)) => assert_eq!((w.0.as_str(), w.1.as_str()), (p.field.as_str(), p.reason.as_str())),
            (w, p) => panic!("wire path {w:?} but prost path {p:?} for {bytes:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mlwatch_proto::v1::{
        FeatureValue, InferenceEvent, IngestInferencesRequest, LabelEvent, Prediction, feature_value,
    };
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::validate::{self, InferenceRef, Limits};

    const NOW: i64 = 1_795_723_079_957;

    fn event() -> InferenceEvent {
        InferenceEvent {
            event_id: "e1".into(),
            model: "fraud".into(),
            latency_ms: 12.5,
            prediction: Some(Prediction {
                score: Some(0.8),
                label: Some("1".into()),
                scores: HashMap::from([("a".into(), 0.2), ("b".into(), 0.8)]),
                ..Prediction::default()
            }),
            features: HashMap::from([
                (
                    "amount".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Number(3.5)),
                    },
                ),
                (
                    "country".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Text("DE".into())),
                    },
                ),
                (
                    "new".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Flag(true)),
                    },
                ),
                (
                    "age".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Missing(true)),
                    },
                ),
            ]),
            tags: HashMap::from([("region".into(), "eu".into())]),
            ..InferenceEvent::default()
        }
    }

    fn both(bytes: &[u8]) {
        differential::check_inference(bytes, &Limits::default(), NOW);
        differential::check_label(bytes, &Limits::default(), NOW);
    }

    #[test]
    fn events_are_found_in_a_request() {
        let events = vec![event(), InferenceEvent::default(), event()];
        let request = IngestInferencesRequest { events: events.clone() }.encode_to_vec();
        let ranges = super::events(&request).unwrap();
        assert_eq!(ranges.len(), 3);
        for (range, e) in ranges.iter().zip(&events) {
            assert_eq!(InferenceEvent::decode(&request[range.clone()]).unwrap(), *e);
        }
        assert!(super::events(&[0x0a, 0x05, 1]).is_err(), "length past the end");
        assert_eq!(
            super::events(&[0x08, 0x01]).unwrap_err(),
            "events: invalid wire type: Varint (expected LengthDelimited)"
        );
        // Unknown fields of the request are skipped.
        let mut with_unknown = vec![0x10, 0x07];
        with_unknown.extend_from_slice(&request);
        assert_eq!(super::events(&with_unknown).unwrap().len(), 3);
    }

    #[test]
    fn valid_events_publish_what_the_decoded_path_publishes() {
        let mut e = event();
        both(&e.encode_to_vec());
        e.model_version = "v3".into();
        e.endpoint = "explain".into();
        e.timestamp_ms = NOW - 1000;
        e.status = 2;
        e.batch_size = 4;
        e.received_at_ms = 5;
        both(&e.encode_to_vec());
        let l = LabelEvent {
            event_id: "e1".into(),
            model: "fraud".into(),
            value: Some(1.5),
            ..LabelEvent::default()
        };
        both(&l.encode_to_vec());
    }

    #[test]
    fn repeated_fields_merge_as_prost_merges() {
        let e = event();
        // A second `prediction` merges into the first; a second `model`
        // wins; a second entry of a map key wins.
        let mut bytes = e.encode_to_vec();
        let extra = InferenceEvent {
            model: "other".into(),
            prediction: Some(Prediction {
                value: Some(2.0),
                scores: HashMap::from([("a".into(), 0.9)]),
                ..Prediction::default()
            }),
            features: HashMap::from([(
                "amount".into(),
                FeatureValue {
                    kind: Some(feature_value::Kind::Number(f64::NAN)),
                },
            )]),
            ..InferenceEvent::default()
        };
        bytes.extend(extra.encode_to_vec());
        both(&bytes);
        let mut view = InferenceRef::default();
        inference(&bytes, &mut view).unwrap();
        assert_eq!(view.model, "other");
        assert_eq!(view.features.len(), 4);
        let p = view.prediction.as_ref().unwrap();
        assert_eq!((p.score, p.value, p.scores.len()), (Some(0.8), Some(2.0), 2));
        // The NaN amount came last: it wins, and is rejected.
        let checked = validate::check_inference_ref(&view, &Limits::default(), NOW);
        assert_eq!(
            checked.unwrap_err(),
            ("features.amount".to_string(), "must be finite, found NaN".to_string())
        );
    }

    #[test]
    fn malformed_events_are_rejected_naming_the_field() {
        let mut view = InferenceRef::default();
        // latency_ms (6) sent as a varint.
        let err = inference(&[0x30, 0x01], &mut view).unwrap_err();
        assert_eq!(
            err,
            (
                "latency_ms".to_string(),
                "malformed protobuf: invalid wire type: Varint (expected SixtyFourBit)".to_string()
            )
        );
        // event_id that is not UTF-8.
        let err = inference(&[0x0a, 0x01, 0xff], &mut view).unwrap_err();
        assert_eq!(err.0, "event_id");
        assert!(err.1.contains("UTF-8"), "{}", err.1);
        // A truncated feature entry.
        let err = inference(&[0x5a, 0x03, 0x0a, 0x05, 0x61], &mut view).unwrap_err();
        assert_eq!(err.0, "features");
        for bytes in [
            &[0x30, 0x01][..],
            &[0x0a, 0x01, 0xff],
            &[0x5a, 0x03, 0x0a, 0x05, 0x61],
            &[0x07],
            &[0x0b, 0x0c],
            &[0x0b, 0x14],
        ] {
            both(bytes);
        }
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        let mut bytes = event().encode_to_vec();
        // Field 99 varint, field 100 fixed32, field 101 a group holding a
        // varint.
        bytes.extend([
            0x98, 0x06, 0x01, 0xa5, 0x06, 1, 2, 3, 4, 0xab, 0x06, 0x08, 0x01, 0xac, 0x06,
        ]);
        both(&bytes);
        let mut view = InferenceRef::default();
        inference(&bytes, &mut view).unwrap();
    }

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = {
            let mut e = event();
            e.model_version = "v1".into();
            let mut bytes = e.encode_to_vec();
            bytes.extend(
                LabelEvent {
                    event_id: "x".into(),
                    label: Some("1".into()),
                    ..LabelEvent::default()
                }
                .encode_to_vec(),
            );
            bytes
        };
        let len = base.len();
        prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..4).prop_map(move |edits| {
            let mut bytes = base.clone();
            for (at, byte, op) in edits {
                let at = at.min(bytes.len().saturating_sub(1));
                match op {
                    0 if !bytes.is_empty() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
    }

    /// The fuzz seed corpus (and every crashing input the fuzzer found,
    /// kept there) goes through the differential check on every test run.
    #[test]
    fn fuzz_seeds_agree_with_prost() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/proto_events");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            both(&bytes);
            if let Ok(ranges) = super::events(&bytes) {
                for range in ranges {
                    both(&bytes[range]);
                }
            }
            n += 1;
        }
        assert!(n >= 8, "seed corpus missing: {n} files in {dir}");
        let valid = std::fs::read(format!("{dir}/inference")).unwrap();
        let mut view = InferenceRef::default();
        inference(&valid, &mut view).unwrap();
        assert_eq!((view.event_id, view.features.len()), ("e1", 4));
        validate::check_inference_ref(&view, &Limits::default(), NOW).unwrap();
    }

    /// Mostly valid: a short name; now and then empty, a control
    /// character, or too long for an identifier.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            40 => "[a-c]{1,3}",
            1 => Just(String::new()),
            1 => Just("\u{7}".to_string()),
            1 => Just("x".repeat(300)),
        ]
    }

    /// Mostly a probability; now and then negative, not finite or huge.
    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            40 => 0.0..1.0f64,
            1 => -1.0..0.0f64,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(1e12),
        ]
    }

    fn feature() -> impl Strategy<Value = FeatureValue> {
        let kind = prop_oneof![
            number().prop_map(feature_value::Kind::Number),
            text().prop_map(feature_value::Kind::Text),
            any::<bool>().prop_map(feature_value::Kind::Flag),
            any::<bool>().prop_map(feature_value::Kind::Missing),
        ];
        prop::option::weighted(0.9, kind).prop_map(|kind| FeatureValue { kind })
    }

    /// Inference events of every shape, valid or not, with the odd field
    /// sent twice (a second part appended: last wins, or merged).
    fn structured() -> impl Strategy<Value = Vec<u8>> {
        let prediction = (
            prop::option::of(number()),
            prop::option::of(text()),
            prop::option::of(number()),
            prop::collection::hash_map(text(), number(), 0..3),
        )
            .prop_map(|(score, label, value, scores)| Prediction {
                score,
                label,
                value,
                scores,
            });
        let time = prop_oneof![4 => Just(0i64), 4 => Just(NOW - 1), 1 => Just(-5), 1 => Just(NOW * 2)];
        let head = (text(), text(), text(), text(), time);
        let body = (
            number(),
            prop_oneof![8 => 0i32..3, 1 => Just(7)],
            text(),
            prop_oneof![4 => Just(0u32), 4 => Just(3), 1 => Just(u32::MAX)],
            prop::option::of(prediction),
            prop::collection::hash_map(text(), feature(), 0..5),
            prop::collection::hash_map(text(), text(), 0..3),
        );
        let tail = prop::option::of((text(), prop::collection::hash_map(text(), feature(), 0..2)));
        (head, body, tail).prop_map(
            |((event_id, model, model_version, endpoint, timestamp_ms), body, tail)| {
                let (latency_ms, status, error, batch_size, prediction, features, tags) = body;
                let e = InferenceEvent {
                    event_id,
                    model,
                    model_version,
                    endpoint,
                    timestamp_ms,
                    latency_ms,
                    status,
                    error,
                    batch_size,
                    prediction,
                    features,
                    tags,
                    received_at_ms: 0,
                };
                let mut bytes = e.encode_to_vec();
                if let Some((model, features)) = tail {
                    bytes.extend(
                        InferenceEvent {
                            model,
                            features,
                            ..InferenceEvent::default()
                        }
                        .encode_to_vec(),
                    );
                }
                bytes
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4))]

        #[test]
        fn structured_events_are_often_valid(batch in prop::collection::vec(structured(), 200)) {
            // The generator is worth its name only if the accepting path
            // is taken often, not just the rejections.
            let accepted = batch
                .iter()
                .filter(|bytes| {
                    let mut view = InferenceRef::default();
                    inference(bytes, &mut view).is_ok()
                        && validate::check_inference_ref(&view, &Limits::default(), NOW).is_ok()
                })
                .count();
            prop_assert!(accepted >= 20, "only {accepted} of 200 generated events are valid");
        }
    }

    proptest! {
        #[test]
        fn structured_events_agree_with_prost(bytes in structured()) {
            both(&bytes);
        }

        #[test]
        fn any_bytes_agree_with_prost(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            both(&bytes);
            let _ = super::events(&bytes);
        }

        #[test]
        fn mutated_events_agree_with_prost(bytes in mutated()) {
            both(&bytes);
        }
    }
}
