//! The AWS SDK as every function uses it: one configuration with bounded
//! timeouts and retries, built once at init and shared by the DynamoDB and KMS
//! clients, and one classification of SDK errors.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_dynamodb::config::SharedCredentialsProvider;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::config::{ConfigError, Source, number};
use crate::trust::{self, TrustRoots};

/// Bounds on every AWS call.
#[derive(Clone, Debug)]
pub struct SdkSettings {
    /// Bound on one attempt (connect included).
    pub attempt_timeout: Duration,
    /// Bound on a whole operation, retries included: the worst a request waits.
    pub operation_timeout: Duration,
    pub max_attempts: u32,
    /// Whom the functions' HTTPS client trusts (`AWS_CA_BUNDLE`).
    pub trust: TrustRoots,
}

impl SdkSettings {
    pub fn from_source(env: &impl Source) -> Result<Self, ConfigError> {
        let millis =
            |var, default| number(env, var, default, 50..=60_000).map(Duration::from_millis);
        let settings = SdkSettings {
            attempt_timeout: millis("SDK_ATTEMPT_TIMEOUT_MS", 1_000)?,
            operation_timeout: millis("SDK_OPERATION_TIMEOUT_MS", 3_000)?,
            max_attempts: number(env, "SDK_MAX_ATTEMPTS", 3, 1..=10)?,
            trust: TrustRoots::from_source(env),
        };
        if settings.operation_timeout < settings.attempt_timeout {
            return Err(ConfigError::Invalid {
                var: "SDK_OPERATION_TIMEOUT_MS",
                reason: "must not be shorter than SDK_ATTEMPT_TIMEOUT_MS".into(),
            });
        }
        Ok(settings)
    }
}

fn timeouts(settings: &SdkSettings) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(settings.attempt_timeout)
        .operation_attempt_timeout(settings.attempt_timeout)
        .operation_timeout(settings.operation_timeout)
        .build()
}

fn retries(settings: &SdkSettings) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(settings.max_attempts)
        .with_initial_backoff(Duration::from_millis(25))
        .with_max_backoff(Duration::from_millis(500))
}

/// The full default configuration loader (profiles, SSO, every credential
/// source) with our bounds: for the operator CLI and the tests.
pub fn sdk_config_loader(settings: &SdkSettings) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts(settings))
        .retry_config(retries(settings))
}

/// The functions' configuration: region and credentials from the variables
/// Lambda sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), nothing else, and an HTTPS client that trusts the
/// Amazon Trust Services roots alone (trust.rs). Built by hand rather than
/// with `aws_config::defaults`: no provider chain to set up at cold start,
/// none of its code (STS, IMDS, profile files) in the binaries, and no
/// system certificate store read from disk.
pub fn sdk_config(settings: &SdkSettings) -> Result<SdkConfig, ConfigError> {
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .map(aws_config::Region::new);
    let http_client = trust::https_client(settings.trust.load()?)?;
    Ok(SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .http_client(http_client)
        .timeout_config(timeouts(settings))
        .retry_config(retries(settings))
        .build())
}

/// A service's endpoint override from the standard variables
/// (`AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`): DynamoDB Local and
/// moto locally; unset when deployed.
pub fn endpoint_override(service: &str) -> Option<String> {
    std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// The KMS client on the shared configuration.
pub fn kms_client(sdk: &SdkConfig) -> aws_sdk_kms::Client {
    let mut config = aws_sdk_kms::config::Builder::from(sdk);
    if let Some(url) = endpoint_override("KMS") {
        config = config.endpoint_url(url);
    }
    aws_sdk_kms::Client::from_conf(config.build())
}

/// What a failed AWS call means for the client.
#[derive(Debug)]
pub enum CallError {
    /// Unreachable, too slow, throttled or failing on AWS's side: retry later (503).
    Unavailable(String),
    /// Refused for a reason retrying will not fix: misconfiguration or a bug (500).
    Rejected(String),
}

/// Error codes that mean "try again later", across DynamoDB and KMS.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

/// Classifies an SDK error: transport trouble, timeouts, throttling and server
/// errors are `Unavailable`; everything else is `Rejected`.
pub fn classify<E, R>(err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CallError::Unavailable(format!("{err:?}"))
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            if TRANSIENT.contains(&code) {
                CallError::Unavailable(code.to_owned())
            } else {
                CallError::Rejected(format!("{code}: {}", service.err().message().unwrap_or("")))
            }
        }
        _ => CallError::Rejected(format!("{err:?}")),
    }
}
