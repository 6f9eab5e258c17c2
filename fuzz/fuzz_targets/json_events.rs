//! Any bytes as an HTTP body: splitting (object, array, JSON Lines) and the
//! conversion of every item to an inference, label and resource event must
//! answer (accept or reject precisely), never panic. The same bytes as a
//! KServe CloudEvent pair body go through the join.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlwatch_collector::kserve::{CeMeta, CloudEventsConfig, Half, Joiner};
use mlwatch_collector::validate::{self, Limits};

const NOW: i64 = 1_795_723_079_957;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(items) = validate::split_body(data) {
        for (i, item) in items.into_iter().enumerate() {
            let Ok(value) = item else { continue };
            let _ = validate::inference_from_json(i, &value, &limits, NOW);
            let _ = validate::label_from_json(i, &value, &limits, NOW);
            let _ = validate::resource_from_json(i, &value, &limits);
        }
    }
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) {
        let meta = |half| CeMeta {
            id: "fuzz".into(),
            half,
            service: "svc".into(),
            endpoint: None,
            component: None,
            time_ms: Some(NOW),
        };
        let mut joiner = Joiner::new(CloudEventsConfig::default());
        let _ = joiner.offer(meta(Half::Request), body.clone(), data.len(), NOW);
        if let (Ok(mlwatch_collector::kserve::Joined::Events(events)), _) =
            joiner.offer(meta(Half::Response), body, data.len(), NOW)
        {
            for (i, e) in events.iter().enumerate() {
                let _ = validate::inference_from_json(i, e, &limits, NOW);
            }
        }
    }
});
