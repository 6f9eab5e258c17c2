//! The local mlwatch experience: a traffic generator ([`traffic`]), the
//! whole stack started in one process ([`stack`]) and the three-incident
//! scenario told live ([`scenario`]). The `mlwatch-demo` binary uses them to
//! show an incident detected, paged, remediated and resolved. The peers
//! (the simulated serving platform, the HTTP receivers standing in for
//! Slack and PagerDuty, the mail catcher) come from `mlwatch-testkit`, as
//! they do for the integration tests.

pub mod scenario;
pub mod stack;
pub mod traffic;
