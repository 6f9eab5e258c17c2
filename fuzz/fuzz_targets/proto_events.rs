//! Any bytes as a gRPC message, differentially: the collector's wire path
//! (find the events in the request, read each into a borrowed view,
//! validate, publish its bytes plus defaults) must accept and reject
//! exactly what decoding with prost and validating the decoded message
//! does, and what it publishes must decode to the same event. Nothing may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlwatch_collector::validate::Limits;
use mlwatch_collector::wire::{self, differential};

const NOW: i64 = 1_795_723_079_957;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    // The bytes as one event of either kind.
    differential::check_inference(data, &limits, NOW);
    differential::check_label(data, &limits, NOW);
    // The bytes as a request: every event found in it.
    if let Ok(ranges) = wire::events(data) {
        for range in ranges {
            differential::check_inference(&data[range.clone()], &limits, NOW);
            differential::check_label(&data[range], &limits, NOW);
        }
    }
});
