//! Each secret-bearing key of the alerter's configuration given a wrong
//! type, from a TOML file and from the environment: the error names the
//! key (a receiver's field too, inside its tagged table), never the value;
//! the binary exits with code 64.

use mlwatch_alerter::{Config, SECTIONS};
use mlwatch_testkit::secrets::{self, BEARER_TOKENS, KAFKA_CLIENT, SecretKey};

const EMAIL: &[(&[&str], &str)] = &[
    (&["receivers", "mail", "type"], "\"email\""),
    (&["receivers", "mail", "host"], "\"smtp.example.org\""),
    (&["receivers", "mail", "from"], "\"mlwatch <alerts@example.org>\""),
    (&["receivers", "mail", "to"], "[\"oncall@example.org\"]"),
];
const WEBHOOK: &[(&[&str], &str)] = &[(&["receivers", "hook", "type"], "\"webhook\"")];

const RECEIVERS: &[SecretKey] = &[
    SecretKey {
        path: &["receivers", "chat", "webhook_url"],
        context: &[(&["receivers", "chat", "type"], "\"slack\"")],
    },
    SecretKey {
        path: &["receivers", "pager", "routing_key"],
        context: &[(&["receivers", "pager", "type"], "\"pagerduty\"")],
    },
    SecretKey {
        path: &["receivers", "mail", "password"],
        context: EMAIL,
    },
    SecretKey {
        path: &["receivers", "hook", "url"],
        context: WEBHOOK,
    },
    SecretKey {
        path: &["receivers", "hook", "bearer_token"],
        context: WEBHOOK,
    },
];

#[test]
fn every_secret_key_of_the_wrong_type_is_named_but_not_shown() {
    secrets::assert_hidden::<Config>(SECTIONS, &[&[BEARER_TOKENS], RECEIVERS, KAFKA_CLIENT]);
}

#[test]
fn the_binary_exits_64_without_showing_the_routing_key() {
    secrets::assert_binary_hides(env!("CARGO_BIN_EXE_mlwatch-alerter"), &RECEIVERS[1]);
}
