//! Each secret-bearing key of the analyzer's configuration (the librdkafka
//! pass-through ones) given a wrong type, from a TOML file and from the
//! environment: the error names the key, never the value; the binary exits
//! with code 64.

use mlwatch_analyzer::{Config, SECTIONS};
use mlwatch_testkit::secrets::{self, BEARER_TOKENS, KAFKA_CLIENT, SecretKey};

/// The tokens the web UI sends to its peers (docs/ui.md).
const UI_TOKENS: &[SecretKey] = &[
    SecretKey::at(&["ui", "alerter_token"]),
    SecretKey::at(&["ui", "remediator_token"]),
];

#[test]
fn every_secret_key_of_the_wrong_type_is_named_but_not_shown() {
    secrets::assert_hidden::<Config>(SECTIONS, &[&[BEARER_TOKENS], UI_TOKENS, KAFKA_CLIENT]);
}

#[test]
fn the_binary_exits_64_without_showing_the_password() {
    secrets::assert_binary_hides(env!("CARGO_BIN_EXE_mlwatch-analyzer"), &KAFKA_CLIENT[0]);
}
