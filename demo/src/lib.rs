//! The local mlwatch experience: a simulated serving platform ([`sim`]), a
//! traffic generator ([`traffic`]), a local HTTP receiver standing in for
//! Slack and other webhooks ([`receiver`]), and the whole stack started in
//! one process ([`stack`]). The `mlwatch-demo` binary uses them to show an
//! incident detected, paged, remediated and resolved; the integration tests
//! use them as real peers (a real tonic server, a real HTTP server).

pub mod receiver;
pub mod scenario;
pub mod sim;
pub mod smtp;
pub mod stack;
pub mod traffic;

/// A fresh suffix for topic and group names, unique per run.
pub fn run_suffix() -> String {
    use rand::Rng;
    format!(
        "{}-{:06x}",
        mlwatch_common::now_ms(),
        rand::rng().random_range(0..0xFF_FFFFu32)
    )
}
