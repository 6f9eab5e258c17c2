//! Any bytes as a Kafka inference message: the analyzer's reusing decoder
//! never panics and agrees with prost (an error exactly when prost errs,
//! else the same event), also when decoding into an event reused from the
//! previous input.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use mlwatch_analyzer::wire::Decoder;
use mlwatch_proto::v1::InferenceEvent;
use prost::Message;

thread_local! {
    static STATE: RefCell<(Decoder, InferenceEvent)> = RefCell::new(Default::default());
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| {
        let (decoder, reused) = &mut *s.borrow_mut();
        let ours = decoder.inference_into(reused, data);
        match InferenceEvent::decode(data) {
            // Compared through their encodings' lengths and the feature
            // names: maps encode in arbitrary order, NaN != NaN.
            Ok(expected) => {
                assert!(ours.is_ok());
                assert_eq!(reused.encoded_len(), expected.encoded_len());
                let mut a: Vec<_> = reused.features.keys().collect();
                let mut b: Vec<_> = expected.features.keys().collect();
                a.sort();
                b.sort();
                assert_eq!(a, b);
            }
            Err(_) => assert!(ours.is_err()),
        }
    });
});
