//! Secret-bearing configuration keys given a value of the wrong type: a
//! service's tests list its keys as [`SecretKey`]s and check that loading
//! fails naming the key and where the value came from, never the value,
//! both from a TOML file and from the environment ([`assert_hidden`]),
//! and that the service's binary exits with code 64 without it
//! ([`assert_binary_hides`]).

use std::path::Path;
use std::process::{Command, Stdio};

use mlwatch_common::config::{self, ConfigError, EXIT_BAD_CONFIG};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The secret given to every key: an integer, because a type error quotes
/// a number it was given (and a string where a string is wanted is no type
/// error).
pub const SECRET: &str = "86753091234";

/// A secret-bearing key, as path segments, and what else its table needs
/// to get as far as the key (TOML literals, also read from environment
/// variables).
#[derive(Debug, Clone, Copy)]
pub struct SecretKey {
    pub path: &'static [&'static str],
    pub context: &'static [(&'static [&'static str], &'static str)],
}

impl SecretKey {
    /// A key needing nothing else.
    pub const fn at(path: &'static [&'static str]) -> Self {
        Self { path, context: &[] }
    }

    /// The key as errors name it: `kafka.client.sasl.password`.
    pub fn name(&self) -> String {
        self.path.join(".")
    }

    /// A TOML file setting the context and the key to [`SECRET`].
    pub fn toml(&self) -> String {
        let line = |path: &[&str], value: &str| {
            let key: Vec<String> = path
                .iter()
                .map(|s| {
                    if s.contains('.') {
                        format!("{s:?}")
                    } else {
                        s.to_string()
                    }
                })
                .collect();
            format!("{} = {value}\n", key.join("."))
        };
        let mut text: String = self.context.iter().map(|(path, value)| line(path, value)).collect();
        text.push_str(&line(self.path, SECRET));
        text
    }

    /// The environment variables setting the context and the key to
    /// [`SECRET`], the key's last. A librdkafka key (`sasl.password`)
    /// cannot be part of a variable's name: it goes in a table value,
    /// `MLWATCH_KAFKA__CLIENT={"sasl.password"=...}`.
    pub fn env(&self) -> Vec<(String, String)> {
        let var = |path: &[&str], value: &str| {
            let plain = path.iter().take_while(|s| !s.contains('.')).count();
            let name = format!("MLWATCH_{}", path[..plain].join("__").to_ascii_uppercase());
            let value = path[plain..]
                .iter()
                .rev()
                .fold(value.to_string(), |inner, s| format!("{{{s:?}={inner}}}"));
            (name, value)
        };
        let mut vars: Vec<_> = self.context.iter().map(|(path, value)| var(path, value)).collect();
        vars.push(var(self.path, SECRET));
        vars
    }
}

/// `[auth] bearer_tokens`, in every service with an API.
pub const BEARER_TOKENS: SecretKey = SecretKey::at(&["auth", "bearer_tokens"]);

/// The librdkafka pass-through settings that hold secrets, in every
/// service.
pub const KAFKA_CLIENT: &[SecretKey] = &[
    SecretKey::at(&["kafka", "client", "sasl.password"]),
    SecretKey::at(&["kafka", "client", "ssl.key.password"]),
    SecretKey::at(&["kafka", "client", "ssl.keystore.password"]),
    SecretKey::at(&["kafka", "client", "ssl.key.pem"]),
    SecretKey::at(&["kafka", "client", "sasl.oauthbearer.client.secret"]),
    SecretKey::at(&["kafka", "client", "sasl.oauthbearer.config"]),
];

/// Checks that the error names the key and where the value came from, and
/// does not contain the value.
fn check(error: ConfigError, key: &SecretKey, origin: &str) {
    let text = error.to_string();
    assert!(
        text.contains(&format!("{}: ", key.name())),
        "{} not named: {text}",
        key.name()
    );
    assert!(text.contains(origin), "{origin} not named: {text}");
    assert!(text.contains("expected"), "no expected type: {text}");
    assert!(!text.contains(SECRET), "the secret is shown: {text}");
}

/// Loads the configuration `C` (a service with `sections`) with each key
/// of each group set to a wrong type holding [`SECRET`], once from a TOML
/// file and once from the environment, and checks each error.
pub fn assert_hidden<C>(sections: &[&str], groups: &[&[SecretKey]])
where
    C: DeserializeOwned + Serialize + Default + std::fmt::Debug,
{
    let dir = crate::temp_dir("secrets");
    let file = dir.path().join("service.toml");
    for key in groups.iter().copied().flatten() {
        std::fs::write(&file, key.toml()).unwrap();
        let error = config::load_with_env::<C>(Some(&file), sections, []).unwrap_err();
        check(error, key, &format!("file {}", file.display()));

        let vars = key.env();
        let error = config::load_with_env::<C>(None, sections, vars.clone()).unwrap_err();
        let (name, _) = vars.last().unwrap();
        check(error, key, &format!("environment variable {name}"));
    }
}

/// Runs a service binary with `key` set to a wrong type holding
/// [`SECRET`], from a file and from the environment: it must exit with
/// code 64, naming the key and never showing the value.
pub fn assert_binary_hides(binary: &str, key: &SecretKey) {
    let dir = crate::temp_dir("secrets-bin");
    let file = dir.path().join("service.toml");
    std::fs::write(&file, key.toml()).unwrap();
    let runs = [
        (run(binary, Some(&file), &[]), format!("file {}", file.display())),
        (
            run(binary, None, &key.env()),
            format!("environment variable {}", key.env().last().unwrap().0),
        ),
    ];
    for ((code, output), origin) in runs {
        assert_eq!(code, Some(EXIT_BAD_CONFIG), "{output}");
        assert!(output.contains(&format!("{}: ", key.name())), "{output}");
        assert!(output.contains(&origin), "{origin} not named: {output}");
        assert!(!output.contains(SECRET), "the secret is shown: {output}");
    }
}

/// The exit code and the output (stderr, then stdout).
fn run(binary: &str, file: Option<&Path>, env: &[(String, String)]) -> (Option<i32>, String) {
    let mut command = Command::new(binary);
    if let Some(file) = file {
        command.arg("--config").arg(file);
    }
    let out = command
        .envs(env.iter().cloned())
        .env_remove("MLWATCH_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("the service binary runs");
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text)
}
