//! Typed configuration, read from the environment once at init. A missing or bad
//! value stops the function at init with a message naming the variable.

use std::time::Duration;

use crate::passwords::BcryptCost;

/// Shortest HMAC secret accepted: RFC 7518 §3.2 asks for at least the hash size.
pub const MIN_SECRET_BYTES: usize = 32;
/// Access token lifetime when `ACCESS_TOKEN_TTL_SECONDS` is unset.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Where and how to reach the user table.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub table_name: String,
    /// Bound on one DynamoDB attempt (connect included).
    pub attempt_timeout: Duration,
    /// Bound on a whole operation, retries included: the worst a request waits on DynamoDB.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
}

/// What it takes to issue and verify access tokens.
#[derive(Clone)]
pub struct TokenConfig {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub access_token_ttl: Duration,
}

// Never print the secret, not even in a debug dump of the config.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_token_ttl", &self.access_token_ttl)
            .finish()
    }
}

/// A source of configuration values: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct Environment;

impl Source for Environment {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Source for F {
    fn get(&self, var: &str) -> Option<String> {
        self(var)
    }
}

impl StoreConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let config = StoreConfig {
            table_name: required(env, "TABLE_NAME")?,
            attempt_timeout: millis(env, "DYNAMODB_ATTEMPT_TIMEOUT_MS", 1_000)?,
            operation_timeout: millis(env, "DYNAMODB_OPERATION_TIMEOUT_MS", 3_000)?,
            max_attempts: number(env, "DYNAMODB_MAX_ATTEMPTS", 3, 1..=10)?,
        };
        if config.operation_timeout < config.attempt_timeout {
            return Err(ConfigError::Invalid {
                var: "DYNAMODB_OPERATION_TIMEOUT_MS",
                reason: "must not be shorter than DYNAMODB_ATTEMPT_TIMEOUT_MS".into(),
            });
        }
        Ok(config)
    }
}

impl TokenConfig {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let secret = required(env, "JWT_SECRET")?.into_bytes();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                var: "JWT_SECRET",
                reason: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ),
            });
        }
        let ttl = number(
            env,
            "ACCESS_TOKEN_TTL_SECONDS",
            DEFAULT_ACCESS_TOKEN_TTL.as_secs(),
            60..=24 * 3600,
        )?;
        Ok(TokenConfig {
            secret,
            issuer: required(env, "JWT_ISSUER")?,
            audience: required(env, "JWT_AUDIENCE")?,
            access_token_ttl: Duration::from_secs(ttl),
        })
    }
}

impl BcryptCost {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let cost = number(env, "BCRYPT_COST", BcryptCost::DEFAULT.get(), 0..=31)?;
        BcryptCost::new(cost).map_err(|reason| ConfigError::Invalid {
            var: "BCRYPT_COST",
            reason,
        })
    }
}

fn required(env: &impl Source, var: &'static str) -> Result<String, ConfigError> {
    match env.get(var) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        _ => Err(ConfigError::Missing(var)),
    }
}

pub(crate) fn number<T>(
    env: &impl Source,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = env.get(var) else {
        return Ok(default);
    };
    let value: T = raw.trim().parse().map_err(|_| ConfigError::Invalid {
        var,
        reason: format!("{raw:?} is not a whole number"),
    })?;
    if !range.contains(&value) {
        return Err(ConfigError::Invalid {
            var,
            reason: format!("{value} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(value)
}

fn millis(env: &impl Source, var: &'static str, default: u64) -> Result<Duration, ConfigError> {
    number(env, var, default, 50..=60_000).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn source(pairs: &[(&str, &str)]) -> impl Source {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |var: &str| map.get(var).cloned()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn token_config_requires_a_secret_of_at_least_32_bytes() {
        let missing =
            TokenConfig::from_source(&source(&[("JWT_ISSUER", "i"), ("JWT_AUDIENCE", "a")]));
        assert_eq!(missing.unwrap_err(), ConfigError::Missing("JWT_SECRET"));

        let short = TokenConfig::from_source(&source(&[
            ("JWT_SECRET", &SECRET[..31]),
            ("JWT_ISSUER", "i"),
            ("JWT_AUDIENCE", "a"),
        ]));
        let err = short.unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "JWT_SECRET",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn token_config_defaults_to_a_15_minute_lifetime() {
        let config = TokenConfig::from_source(&source(&[
            ("JWT_SECRET", SECRET),
            ("JWT_ISSUER", "https://auth.example"),
            ("JWT_AUDIENCE", "api"),
        ]))
        .unwrap();
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert!(
            !format!("{config:?}").contains(SECRET),
            "debug output leaks the secret"
        );
    }

    #[test]
    fn token_config_names_the_missing_issuer_and_audience() {
        let err =
            TokenConfig::from_source(&source(&[("JWT_SECRET", SECRET), ("JWT_AUDIENCE", "a")]));
        assert_eq!(err.unwrap_err(), ConfigError::Missing("JWT_ISSUER"));
        let err = TokenConfig::from_source(&source(&[("JWT_SECRET", SECRET), ("JWT_ISSUER", "i")]));
        assert_eq!(err.unwrap_err(), ConfigError::Missing("JWT_AUDIENCE"));
    }

    #[test]
    fn bcrypt_cost_defaults_to_12_and_refuses_below_10() {
        assert_eq!(BcryptCost::from_source(&source(&[])).unwrap().get(), 12);
        assert_eq!(
            BcryptCost::from_source(&source(&[("BCRYPT_COST", "10")]))
                .unwrap()
                .get(),
            10
        );
        let err = BcryptCost::from_source(&source(&[("BCRYPT_COST", "9")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "BCRYPT_COST",
                    ..
                }
            ),
            "{err}"
        );
        let err = BcryptCost::from_source(&source(&[("BCRYPT_COST", "twelve")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "BCRYPT_COST",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn store_config_needs_a_table_and_bounds_its_timeouts() {
        assert_eq!(
            StoreConfig::from_source(&source(&[])).unwrap_err(),
            ConfigError::Missing("TABLE_NAME")
        );
        let config = StoreConfig::from_source(&source(&[("TABLE_NAME", "users")])).unwrap();
        assert_eq!(config.operation_timeout, Duration::from_secs(3));
        let err = StoreConfig::from_source(&source(&[
            ("TABLE_NAME", "users"),
            ("DYNAMODB_ATTEMPT_TIMEOUT_MS", "2000"),
            ("DYNAMODB_OPERATION_TIMEOUT_MS", "1000"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "DYNAMODB_OPERATION_TIMEOUT_MS",
                ..
            }
        ));
    }
}
