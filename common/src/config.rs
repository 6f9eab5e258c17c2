//! Layered configuration: built-in defaults < TOML file <
//! `MLWATCH_<SECTION>__<KEY>` environment variables.
//!
//! Every service's config is a serde struct with `deny_unknown_fields` and
//! defaults, so an empty file is a working config. `KAFKA_BOOTSTRAP_SERVERS`
//! (the variable the tests and docker-compose use) sits just above the
//! built-in default: a TOML file or `MLWATCH_KAFKA__BOOTSTRAP_SERVERS` wins.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Exit code for bad configuration (EX_CONFIG would be 78; we follow the
/// house rule of EX_USAGE, 64, for any bad config or argument).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Why a configuration could not be loaded; the text names the key.
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
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl AdminConfig {
    pub fn on(listen: SocketAddr) -> Self {
        Self { listen }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
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
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if sections.contains(&"kafka")
        && let Ok(servers) = std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        && !servers.trim().is_empty()
    {
        figment = figment.merge(Serialized::default("kafka.bootstrap_servers", servers));
    }
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Missing {
                path: path.display().to_string(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    let sections: Vec<String> = sections.iter().map(|s| s.to_ascii_lowercase()).collect();
    let env = Env::prefixed("MLWATCH_")
        .filter(move |key| {
            let key = key.as_str().to_ascii_lowercase();
            key.split_once("__")
                .is_some_and(|(section, _)| sections.iter().any(|s| s == section))
        })
        .split("__");
    figment = figment.merge(env);
    figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Parses a TOML string (tests and examples).
pub fn from_toml<T>(text: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        admin: AdminConfig,
        #[serde(default)]
        window_secs: u64,
    }

    #[test]
    fn unknown_key_is_named() {
        let err = from_toml::<Sample>("windw_secs = 3").unwrap_err();
        assert!(err.to_string().contains("windw_secs"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = from_toml::<Sample>("[admin]\nlisten = \"nope\"").unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }

    #[test]
    fn defaults_fill_an_empty_file() {
        let s = from_toml::<Sample>("").unwrap();
        assert_eq!(s.window_secs, 0);
        assert_eq!(s.admin.listen.ip().to_string(), "127.0.0.1");
    }
}
