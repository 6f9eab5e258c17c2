//! Decoding of the analyzer's hot message: inference events are read as
//! [`InferenceRef`] views borrowing from their Kafka message
//! (`mlwatch_proto::view`, the reader the collector validates with), one
//! view per message of a batch, their lists recycled from batch to batch.
//! Pure: no I/O.

use mlwatch_proto::view::{self, Checked, InferenceRef};

/// Views handed back from earlier batches (emptied, memory kept).
#[derive(Debug, Default)]
pub struct Decoder {
    spare: Vec<InferenceRef<'static>>,
}

/// How many emptied views are kept (a poll's worth).
const SPARE_VIEWS: usize = 4096;

impl Decoder {
    /// Reads `payload` as an `InferenceEvent`; on `Err`, the field path and
    /// why.
    pub fn view<'a>(&mut self, payload: &'a [u8]) -> Checked<InferenceRef<'a>> {
        let mut v = self.spare.pop().map(InferenceRef::recycle).unwrap_or_default();
        match view::inference(payload, &mut v) {
            Ok(()) => Ok(v),
            Err(e) => {
                self.recycle(v);
                Err(e)
            }
        }
    }

    /// Takes back a view that is no longer needed.
    pub fn recycle(&mut self, v: InferenceRef<'_>) {
        if self.spare.len() < SPARE_VIEWS {
            self.spare.push(v.recycle());
        }
    }
}

#[cfg(test)]
mod tests {
    use mlwatch_proto::v1::{FeatureValue, InferenceEvent, feature_value::Kind};
    use prost::Message as _;

    use super::*;

    fn event(i: usize) -> InferenceEvent {
        InferenceEvent {
            event_id: format!("e{i}"),
            model: "m".into(),
            features: (0..25 + i % 3)
                .map(|f| {
                    let kind = if f % 5 == 0 {
                        Kind::Text(format!("c{}", i % 4))
                    } else {
                        Kind::Number(i as f64)
                    };
                    (format!("f{f}"), FeatureValue { kind: Some(kind) })
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn recycled_views_read_each_message_as_prost_and_keep_their_buffers() {
        let messages: Vec<Vec<u8>> = (0..50).map(|i| event(i).encode_to_vec()).collect();
        let mut decoder = Decoder::default();
        let mut capacity = 0;
        for batch in messages.chunks(7) {
            let views: Vec<InferenceRef<'_>> = batch.iter().map(|m| decoder.view(m).unwrap()).collect();
            for (view, bytes) in views.iter().zip(batch) {
                assert_eq!(view.to_event(), InferenceEvent::decode(bytes.as_slice()).unwrap());
                capacity = capacity.max(view.features.capacity());
            }
            for v in views {
                decoder.recycle(v);
            }
        }
        assert!(capacity >= 25);
        let again = decoder.view(&messages[0]).unwrap();
        assert!(again.features.capacity() >= 25, "a recycled view keeps its list");
        assert!(decoder.view(&[0x0a, 0x01, 0xff]).is_err(), "event_id not UTF-8");
    }
}
