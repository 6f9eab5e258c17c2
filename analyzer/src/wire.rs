//! Decoding of the hot message, [`InferenceEvent`], into reused memory
//! (pure: no I/O).
//!
//! `InferenceEvent::decode` allocates a fresh feature map per event and a
//! `String` per feature name (and per text value), and grows the map as it
//! goes: with 25 features that was most of the analyzer's decoding time.
//! [`Decoder::inference_into`] gives exactly what `InferenceEvent::decode`
//! gives (same fields, same errors, same last-wins rule for repeated map
//! keys), but decodes into an event handed back from an earlier message:
//! its feature map keeps its capacity, and the names and text values it
//! held are reused as the buffers of the new ones. Every other field goes
//! through prost's generated code.

use mlwatch_proto::v1::{FeatureValue, InferenceEvent, feature_value::Kind};
use prost::DecodeError;
use prost::Message as _;
use prost::bytes::Buf as _;
use prost::encoding::{self, DecodeContext, WireType, check_wire_type, decode_key, merge_loop, skip_field};

/// Field number of `InferenceEvent.features`.
const FEATURES: u32 = 11;

/// Buffers recycled from decoded events.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Spare strings (feature names and text values of earlier events).
    strings: Vec<String>,
}

impl Decoder {
    /// Decodes `payload` into `event`, replacing what it held: the same
    /// result as `InferenceEvent::decode(payload)`, with the allocations of
    /// `event`'s previous features reused. On `Err`, `event` holds an
    /// unspecified (valid) value.
    pub fn inference_into(&mut self, event: &mut InferenceEvent, payload: &[u8]) -> Result<(), DecodeError> {
        let mut features = std::mem::take(&mut event.features);
        for (name, value) in features.drain() {
            self.strings.push(name);
            if let Some(Kind::Text(t)) = value.kind {
                self.strings.push(t);
            }
        }
        *event = InferenceEvent {
            features,
            ..InferenceEvent::default()
        };
        let mut buf = payload;
        let ctx = DecodeContext::default();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            if tag == FEATURES {
                check_wire_type(WireType::LengthDelimited, wire_type)?;
                let (name, value) = self.entry(&mut buf, ctx.clone())?;
                event.features.insert(name, value);
            } else {
                event.merge_field(tag, wire_type, &mut buf, ctx.clone())?;
            }
        }
        Ok(())
    }

    /// A spare (empty) string.
    fn spare(&mut self) -> String {
        let mut s = self.strings.pop().unwrap_or_default();
        s.clear();
        s
    }

    /// One length-delimited map entry: key (field 1) and value (field 2, a
    /// `FeatureValue`), each starting from its default, as prost does.
    fn entry(&mut self, buf: &mut &[u8], ctx: DecodeContext) -> Result<(String, FeatureValue), DecodeError> {
        let mut entry = (self.spare(), FeatureValue::default());
        let result = merge_loop(&mut entry, buf, ctx, |(name, value), buf, ctx| {
            let (tag, wire_type) = decode_key(buf)?;
            match tag {
                1 => encoding::string::merge(wire_type, name, buf, ctx),
                2 => {
                    check_wire_type(WireType::LengthDelimited, wire_type)?;
                    merge_loop(value, buf, ctx, |value, buf, ctx| self.value_field(value, buf, ctx))
                }
                _ => skip_field(wire_type, tag, buf, ctx),
            }
        });
        match result {
            Ok(()) => Ok(entry),
            Err(e) => {
                self.strings.push(entry.0);
                Err(e)
            }
        }
    }

    /// One field of a `FeatureValue` (the oneof's last member wins).
    fn value_field(
        &mut self,
        value: &mut FeatureValue,
        buf: &mut &[u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let (tag, wire_type) = decode_key(buf)?;
        let kind = match tag {
            1 => {
                let mut x = 0.0;
                encoding::double::merge(wire_type, &mut x, buf, ctx)?;
                Kind::Number(x)
            }
            2 => {
                let mut text = match value.kind.take() {
                    Some(Kind::Text(t)) => t,
                    other => {
                        value.kind = other;
                        self.spare()
                    }
                };
                if let Err(e) = encoding::string::merge(wire_type, &mut text, buf, ctx) {
                    self.strings.push(text);
                    return Err(e);
                }
                Kind::Text(text)
            }
            3 | 4 => {
                let mut b = false;
                encoding::bool::merge(wire_type, &mut b, buf, ctx)?;
                if tag == 3 { Kind::Flag(b) } else { Kind::Missing(b) }
            }
            _ => return skip_field(wire_type, tag, buf, ctx),
        };
        if let Some(Kind::Text(old)) = value.kind.replace(kind) {
            self.strings.push(old);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mlwatch_proto::v1::{InferenceStatus, Prediction};
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = Option<Kind>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(|x| Some(Kind::Number(x))),
            "[a-zé]{0,6}".prop_map(|t| Some(Kind::Text(t))),
            any::<bool>().prop_map(|b| Some(Kind::Flag(b))),
            any::<bool>().prop_map(|b| Some(Kind::Missing(b))),
        ]
    }

    fn event() -> impl Strategy<Value = InferenceEvent> {
        (
            "[a-z0-9]{0,8}",
            "[a-z]{1,5}",
            proptest::collection::hash_map("[a-c]{0,3}", kind(), 0..12),
            proptest::collection::hash_map("[a-b]{1,2}", "[a-z]{0,3}", 0..3),
            any::<i64>(),
            any::<f64>(),
            proptest::option::of(any::<f64>()),
        )
            .prop_map(|(event_id, model, features, tags, t, latency, score)| InferenceEvent {
                event_id,
                model,
                model_version: "v1".into(),
                timestamp_ms: t,
                latency_ms: latency,
                status: InferenceStatus::Ok as i32,
                prediction: score.map(|s| Prediction {
                    score: Some(s),
                    label: Some("1".into()),
                    ..Default::default()
                }),
                features: features
                    .into_iter()
                    .map(|(k, kind)| (k, FeatureValue { kind }))
                    .collect(),
                tags,
                ..Default::default()
            })
    }

    /// Equality that treats NaN as equal to itself (bitwise floats) and
    /// maps as maps (their encoding order is arbitrary).
    fn same(a: &InferenceEvent, b: &InferenceEvent) -> bool {
        let rest = |e: &InferenceEvent| {
            InferenceEvent {
                features: HashMap::new(),
                tags: HashMap::new(),
                ..e.clone()
            }
            .encode_to_vec()
        };
        let features = a.features.len() == b.features.len()
            && a.features.iter().all(|(k, v)| {
                b.features.get(k).is_some_and(|w| match (&v.kind, &w.kind) {
                    (Some(Kind::Number(x)), Some(Kind::Number(y))) => x.to_bits() == y.to_bits(),
                    (x, y) => x == y,
                })
            });
        features && a.tags == b.tags && rest(a) == rest(b)
    }

    proptest! {
        /// A sequence of events decoded into one reused event gives what
        /// prost gives for each.
        #[test]
        fn reused_decoding_equals_prost(events in proptest::collection::vec(event(), 1..6)) {
            let mut decoder = Decoder::default();
            let mut reused = InferenceEvent::default();
            for e in &events {
                let bytes = e.encode_to_vec();
                decoder.inference_into(&mut reused, &bytes).unwrap();
                let expected = InferenceEvent::decode(bytes.as_slice()).unwrap();
                prop_assert!(same(&reused, &expected), "{reused:?} != {expected:?}");
            }
        }

        /// Arbitrary bytes: an error exactly when prost errs, else the same
        /// event (including repeated keys, unknown fields, truncation).
        #[test]
        fn arbitrary_bytes_decode_as_prost_does(
            prefix in event(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = prefix.encode_to_vec();
            bytes.extend_from_slice(&garbage);
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let mut decoder = Decoder::default();
            let mut reused = prefix.clone();
            let ours = decoder.inference_into(&mut reused, bytes);
            match InferenceEvent::decode(bytes) {
                Ok(expected) => {
                    prop_assert!(ours.is_ok(), "{ours:?}");
                    prop_assert!(same(&reused, &expected), "{reused:?} != {expected:?}");
                }
                Err(_) => prop_assert!(ours.is_err()),
            }
        }
    }

    #[test]
    fn a_repeated_feature_name_keeps_the_last_value_and_text_merges_as_prost() {
        // features { "a": 1.0 }, features { "a": "x" }, then a value with
        // two kinds (number then text): the last wins.
        let mut bytes = InferenceEvent {
            features: [(
                "a".to_string(),
                FeatureValue {
                    kind: Some(Kind::Number(1.0)),
                },
            )]
            .into(),
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend(
            InferenceEvent {
                features: [(
                    "a".to_string(),
                    FeatureValue {
                        kind: Some(Kind::Text("x".into())),
                    },
                )]
                .into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let mut decoder = Decoder::default();
        let mut e = InferenceEvent::default();
        decoder.inference_into(&mut e, &bytes).unwrap();
        assert_eq!(e, InferenceEvent::decode(bytes.as_slice()).unwrap());
        assert_eq!(e.features["a"].kind, Some(Kind::Text("x".into())));
    }
}
