//! Layered configuration: built-in defaults < TOML file <
//! `MLWATCH_<SECTION>__<KEY>` environment variables.
//!
//! Every service's config is a serde struct with `deny_unknown_fields` and
//! defaults, so an empty file is a working config. `KAFKA_BOOTSTRAP_SERVERS`
//! (the variable the tests and docker-compose use) sits just above the
//! built-in default: a TOML file or `MLWATCH_KAFKA__BOOTSTRAP_SERVERS` wins.

use std::net::SocketAddr;
use std::path::Path;

use figment::error::{Actual, Kind};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Tag, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Exit code for bad configuration (EX_CONFIG would be 78; we follow the
/// house rule of EX_USAGE, 64, for any bad config or argument).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Why a configuration could not be loaded. The text names the key, the
/// expected type and where the value came from (the file, or the
/// environment variable); a value at a secret-bearing key
/// ([`crate::secrets::is_secret_path`]) is never shown.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} not found")]
    Missing { path: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The `[admin]` section: the admin HTTP server of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz` and the service's JSON API.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Serve the admin port over TLS with this certificate and key; plain
    /// text when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Connection caps and timeouts.
    #[serde(default)]
    pub connections: crate::listener::ConnectionLimits,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl AdminConfig {
    pub fn on(listen: SocketAddr) -> Self {
        Self {
            listen,
            tls: None,
            connections: Default::default(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self::on(default_admin_listen())
    }
}

/// Loads a service configuration.
///
/// `sections` are the top-level sections the service knows; environment
/// variables `MLWATCH_<SECTION>__<KEY>` are read for those only, so services
/// sharing one environment do not trip over each other's settings.
pub fn load<T>(path: Option<&Path>, sections: &[&str]) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    load_with_env(path, sections, env)
}

/// [`load`] with the environment given (tests).
pub fn load_with_env<T>(
    path: Option<&Path>,
    sections: &[&str],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    // Sorted, so `MLWATCH_A__B__C` lands on top of `MLWATCH_A__B`.
    env.sort();
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if sections.contains(&"kafka")
        && let Some((name, servers)) = env.iter().find(|(name, _)| name == "KAFKA_BOOTSTRAP_SERVERS")
        && !servers.trim().is_empty()
    {
        figment = figment.merge(EnvVar {
            name: name.clone(),
            key: "kafka.bootstrap_servers".into(),
            value: Value::from(servers.clone()),
        });
    }
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Missing {
                path: path.display().to_string(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    for (name, value) in env {
        let Some(key) = env_key(&name, sections) else {
            continue;
        };
        let value = value
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        figment = figment.merge(EnvVar { name, key, value });
    }
    extract(&figment)
}

/// The dotted key of a variable `MLWATCH_<SECTION>__<KEY>` (any case)
/// whose section is one of `sections`.
fn env_key(name: &str, sections: &[&str]) -> Option<String> {
    const PREFIX: &str = "MLWATCH_";
    let rest = name
        .get(PREFIX.len()..)
        .filter(|_| name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX))?;
    let (section, _) = rest.split_once("__")?;
    sections
        .iter()
        .any(|s| s.eq_ignore_ascii_case(section))
        .then(|| rest.to_ascii_lowercase().replace("__", "."))
}

/// One environment variable as a layer, named after the variable so that
/// an error can say where its value came from. The value is read as
/// figment reads environment values (`[a, b]` is a list, `5` a number).
struct EnvVar {
    name: String,
    key: String,
    value: Value,
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&self.key, &self.value).data()
    }
}

/// Parses a TOML string (tests and examples).
pub fn from_toml<T>(text: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    extract(&Figment::from(Serialized::defaults(T::default())).merge(Toml::string(text)))
}

fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|error| {
        let lines: Vec<String> = error.into_iter().map(|e| describe(figment, e)).collect();
        ConfigError::Invalid(lines.join("; "))
    })
}

/// One error as `key: what was wrong (where it came from)`, the value left
/// out when the key is secret-bearing.
fn describe(figment: &Figment, error: figment::Error) -> String {
    let mut path = error.path.clone();
    let mut metadata = error.metadata.clone();
    // Inside a tagged enum (`[receivers.NAME]`) serde reports the enum, not
    // the field: find the one field holding the rejected value.
    if let Kind::InvalidType(actual, _) | Kind::InvalidValue(actual, _) = &error.kind
        && let Some((field, tag)) = offending_field(figment, &path, actual)
    {
        path.push(field);
        metadata = figment.get_metadata(tag).cloned().or(metadata);
    }
    // A provider's own error (a TOML syntax error) has no key; its text
    // is kept, without the quoted source lines.
    let provider_error = path.is_empty() && matches!(error.kind, Kind::Message(_));
    let what = if crate::secrets::is_secret_path(&path) && !provider_error {
        withheld(&error.kind)
    } else {
        error.kind.to_string()
    };
    let what = without_source_lines(&what);
    let from = metadata.map(|m| origin(&m)).unwrap_or_default();
    match (path.is_empty(), from.is_empty()) {
        (true, true) => what,
        (true, false) => format!("{what} ({from})"),
        (false, true) => format!("{}: {what}", path.join(".")),
        (false, false) => format!("{}: {what} ({from})", path.join(".")),
    }
}

/// The error text with values left out: the found type but not what it
/// held.
fn withheld(kind: &Kind) -> String {
    const NOTE: &str = "the value is not shown: the key holds a secret";
    match kind {
        Kind::InvalidType(actual, expected) => {
            format!("invalid type: found {}, expected {expected} ({NOTE})", type_of(actual))
        }
        Kind::InvalidValue(actual, expected) => {
            format!("invalid value: found {}, expected {expected} ({NOTE})", type_of(actual))
        }
        Kind::UnknownVariant(_, expected) => format!("unknown variant, expected one of {expected:?} ({NOTE})"),
        Kind::Unsupported(actual) | Kind::UnsupportedKey(actual, _) => {
            format!("unsupported {} ({NOTE})", type_of(actual))
        }
        Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => format!("integer out of range ({NOTE})"),
        // A custom message may quote the value.
        Kind::Message(_) => format!("invalid value ({NOTE})"),
        Kind::InvalidLength(..) | Kind::UnknownField(..) | Kind::MissingField(_) | Kind::DuplicateField(_) => {
            kind.to_string()
        }
    }
}

fn type_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) => "a character",
        Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a sequence",
        Actual::Map => "a map",
        Actual::Unit => "unit",
        Actual::Option => "an option",
        _ => "another type",
    }
}

/// Drops the quoted source lines of a TOML syntax error (`3 | key = "..."`
/// and the caret line): they can hold a secret, and the line and column
/// are in the text already.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .filter(|line| {
            !line
                .split_once('|')
                .is_some_and(|(gutter, _)| gutter.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Where a value came from: `file PATH`, `environment variable NAME`, or
/// the provider's name.
fn origin(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(Source::File(file)) => format!("file {}", file.display()),
        _ => metadata.name.to_string(),
    }
}

/// The one field of the table at `path` whose value is `actual`, with its
/// value's tag (which says which provider set it).
fn offending_field(figment: &Figment, path: &[String], actual: &Actual) -> Option<(String, Tag)> {
    let (first, rest) = path.split_first()?;
    let mut value = figment.find_value(first).ok()?;
    for segment in rest {
        value = value.into_dict()?.remove(segment)?;
    }
    let mut matches = value.into_dict()?.into_iter().filter(|(_, v)| v.to_actual() == *actual);
    let (field, v) = matches.next()?;
    matches.next().is_none().then(|| (field, v.tag()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::auth::{AuthConfig, Secret};
    use crate::kafka::KafkaConfig;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        admin: AdminConfig,
        #[serde(default)]
        window_secs: u64,
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        auth: AuthConfig,
        #[serde(default)]
        receivers: BTreeMap<String, Receiver>,
    }

    /// A tagged enum, as the alerter's receivers.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
    enum Receiver {
        Pager {
            #[serde(default)]
            routing_key: Option<Secret>,
            #[serde(default)]
            rate_limit_ms: Option<u64>,
        },
    }

    const SECTIONS: &[&str] = &["admin", "kafka", "auth", "receivers"];

    fn with_env(vars: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        load_with_env(None, SECTIONS, vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unknown_key_is_named() {
        let err = from_toml::<Sample>("windw_secs = 3").unwrap_err();
        assert!(err.to_string().contains("windw_secs"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = from_toml::<Sample>("[admin]\nlisten = \"nope\"").unwrap_err();
        assert!(err.to_string().contains("admin.listen"), "{err}");
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let s = from_toml::<Sample>("").unwrap();
        assert_eq!(s.window_secs, 0);
        assert_eq!(s.admin.listen.ip().to_string(), "127.0.0.1");
    }

    #[test]
    fn a_value_at_an_ordinary_key_is_shown() {
        let err = with_env(&[("MLWATCH_KAFKA__PARTITIONS", "many")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.partitions"), "{err}");
        assert!(err.contains("\"many\""), "{err}");
        assert!(err.contains("environment variable MLWATCH_KAFKA__PARTITIONS"), "{err}");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_named_but_not_shown() {
        let cases = [
            (
                "[auth]\nbearer_tokens = 86753091234\n",
                "auth.bearer_tokens",
                "an integer",
            ),
            (
                "[auth]\nbearer_tokens = [86753091234]\n",
                "auth.bearer_tokens.0",
                "an integer",
            ),
            (
                "[kafka.client]\n\"sasl.password\" = 86753091234\n",
                "kafka.client.sasl.password",
                "an integer",
            ),
            (
                "[kafka]\nclient = \"sasl.password=86753091234\"\n",
                "kafka.client",
                "a string",
            ),
            (
                "[receivers.pd]\ntype = \"pager\"\nrouting_key = 86753091234\n",
                "receivers.pd.routing_key",
                "an integer",
            ),
            ("[receivers]\npd = \"86753091234\"\n", "receivers.pd", "a string"),
        ];
        for (toml, key, found) in cases {
            let err = from_toml::<Sample>(toml).unwrap_err().to_string();
            assert!(err.contains(&format!("{key}: invalid type: found {found}")), "{err}");
            assert!(err.contains("the key holds a secret"), "{err}");
            assert!(!err.contains("86753091234"), "{err}");
        }
    }

    #[test]
    fn errors_name_the_file_or_the_variable() {
        let dir = std::env::temp_dir().join(format!("mlwatch-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[receivers.pd]\ntype = \"pager\"\nrouting_key = 86753091234\n").unwrap();
        let err = load::<Sample>(Some(&file), SECTIONS).unwrap_err().to_string();
        assert!(err.contains(&format!("(file {})", file.display())), "{err}");
        assert!(!err.contains("86753091234"), "{err}");

        // A variable on top of the file's table is named, not the file.
        let err = load_with_env::<Sample>(
            Some(&file),
            SECTIONS,
            [("MLWATCH_RECEIVERS__PD__ROUTING_KEY".into(), "[\"s3cr3t\"]".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("receivers.pd.routing_key: invalid type: found a sequence"),
            "{err}"
        );
        assert!(
            err.contains("(environment variable MLWATCH_RECEIVERS__PD__ROUTING_KEY)"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_syntax_error_keeps_its_position_but_not_the_line() {
        let err = from_toml::<Sample>("[kafka.client]\n\"sasl.password\" = \"s3cr3t\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn bearer_tokens_come_as_a_list_or_a_comma_separated_string() {
        let tokens =
            |s: Sample| -> Vec<String> { s.auth.bearer_tokens.iter().map(|t| t.expose().to_string()).collect() };
        let one = with_env(&[("MLWATCH_AUTH__BEARER_TOKENS", "team-a-token")]).unwrap();
        assert_eq!(tokens(one), ["team-a-token"]);
        let two = with_env(&[("MLWATCH_AUTH__BEARER_TOKENS", "team-a-token, team-b-token")]).unwrap();
        assert_eq!(tokens(two), ["team-a-token", "team-b-token"]);
        let list = with_env(&[("MLWATCH_AUTH__BEARER_TOKENS", "[team-a-token,team-b-token]")]).unwrap();
        assert_eq!(tokens(list), ["team-a-token", "team-b-token"]);
        let toml = from_toml::<Sample>("[auth]\nbearer_tokens = \"team-a-token\"\n").unwrap();
        assert_eq!(tokens(toml), ["team-a-token"]);

        let err = with_env(&[("MLWATCH_AUTH__BEARER_TOKENS", "86753091234")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.bearer_tokens"), "{err}");
        assert!(
            err.contains("environment variable MLWATCH_AUTH__BEARER_TOKENS"),
            "{err}"
        );
        assert!(!err.contains("86753091234"), "{err}");
    }

    #[test]
    fn librdkafka_keys_come_from_the_environment_and_from_files() {
        let dir = std::env::temp_dir().join(format!("mlwatch-kafka-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cr3t-from-file\n").unwrap();
        let s = with_env(&[
            ("MLWATCH_KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL"),
            ("MLWATCH_KAFKA__CLIENT__SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("MLWATCH_KAFKA__CLIENT__SASL_PASSWORD_FILE", file.to_str().unwrap()),
            ("MLWATCH_KAFKA__CLIENT__LOG_LEVEL", "6"),
        ])
        .unwrap();
        let client = &s.kafka.client;
        assert_eq!(client.get("security.protocol").unwrap(), "SASL_SSL");
        assert_eq!(client.get("sasl.mechanisms").unwrap(), "SCRAM-SHA-512");
        assert_eq!(client.get("sasl.password").unwrap(), "s3cr3t-from-file");
        assert_eq!(client.get("log_level").unwrap(), "6");
        assert!(!client.contains_key("sasl.password.file"));
        // The dotted form in TOML works alike.
        let toml = format!(
            "[kafka.client]\n\"sasl.password.file\" = {:?}\n",
            file.to_str().unwrap()
        );
        let s = from_toml::<Sample>(&toml).unwrap();
        assert_eq!(s.kafka.client.get("sasl.password").unwrap(), "s3cr3t-from-file");
        // An unreadable file names the key and the path, never a value.
        let err = with_env(&[("MLWATCH_KAFKA__CLIENT__SASL_PASSWORD_FILE", "/nonexistent/pw")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kafka.client.sasl_password_file: ")
                && err.contains("MLWATCH_KAFKA__CLIENT__SASL_PASSWORD_FILE"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
