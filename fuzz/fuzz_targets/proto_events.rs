//! Any bytes as a gRPC message: protobuf decoding of both request types and
//! validation of every decoded event must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlwatch_collector::validate::{self, Limits};
use mlwatch_proto::v1::{IngestInferencesRequest, IngestLabelsRequest};
use prost::Message;

const NOW: i64 = 1_795_723_079_957;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(request) = IngestInferencesRequest::decode(data) {
        for (i, mut e) in request.events.into_iter().enumerate() {
            let _ = validate::inference_proto(i, &mut e, &limits, NOW);
        }
    }
    if let Ok(request) = IngestLabelsRequest::decode(data) {
        for (i, mut e) in request.events.into_iter().enumerate() {
            let _ = validate::label_proto(i, &mut e, &limits, NOW);
        }
    }
});
