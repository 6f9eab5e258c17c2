//! Any bytes as a Kafka inference message: the analyzer's borrowed view
//! never panics and agrees with prost (an error exactly when prost errs,
//! else the same event), also with lists recycled from the previous input.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use mlwatch_analyzer_core::wire::Decoder;
use mlwatch_proto::v1::InferenceEvent;
use prost::Message;

thread_local! {
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::default());
}

fuzz_target!(|data: &[u8]| {
    DECODER.with(|d| {
        let decoder = &mut *d.borrow_mut();
        let ours = decoder.view(data);
        match InferenceEvent::decode(data) {
            // Compared through their encodings' lengths and the feature
            // names: maps encode in arbitrary order, NaN != NaN.
            Ok(expected) => {
                let view = ours.expect("prost accepts it");
                let event = view.to_event();
                assert_eq!(event.encoded_len(), expected.encoded_len());
                let mut a: Vec<_> = event.features.keys().collect();
                let mut b: Vec<_> = expected.features.keys().collect();
                a.sort();
                b.sort();
                assert_eq!(a, b);
                decoder.recycle(view);
            }
            Err(_) => assert!(ours.is_err()),
        }
    });
});
