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

/// What a failed AWS call means for the client. The text of each is
/// [`Failure`]'s: service, operation, kind and error code, never the raw
/// response (which can hold a whole item, a password hash included).
#[derive(Debug)]
pub enum CallError {
    /// Unreachable, too slow, throttled or failing on AWS's side: retry later (503).
    Unavailable(String),
    /// Refused for a reason retrying will not fix: misconfiguration or a bug (500).
    Rejected(String),
}

/// Error codes that mean "slow down", across DynamoDB, KMS and SES.
const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    // SES v2's "maximum sending rate exceeded".
    "TooManyRequestsException",
];

/// Error codes that mean "another write held the item at that moment": a plain
/// write that met a running transaction. Nothing was written; not retried by the SDK.
const CONTENDED: &[&str] = &["TransactionConflictException"];

/// Error codes that mean "AWS is in trouble, try again later".
const UNAVAILABLE: &[&str] = &[
    "InternalServerError",
    "ServiceUnavailable",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
];

/// A failed AWS call, described by what is safe to log: which service and
/// operation, what kind of failure, and the service's error code if it sent one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub service: &'static str,
    pub operation: &'static str,
    /// `timeout`, `unreachable`, `bad_response`, `throttled`, `contended`,
    /// `unavailable`, `rejected` or `construction`.
    pub kind: &'static str,
    pub code: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.service, self.operation, self.kind)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        Ok(())
    }
}

impl Failure {
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            "timeout" | "unreachable" | "bad_response" | "throttled" | "contended" | "unavailable"
        )
    }
}

/// Service and operation from the SDK's error type, e.g.
/// `aws_sdk_dynamodb::operation::get_item::GetItemError` → (`dynamodb`, `GetItem`).
fn service_and_operation<E>() -> (&'static str, &'static str) {
    let name = std::any::type_name::<E>();
    let service = name
        .strip_prefix("aws_sdk_")
        .and_then(|rest| rest.split("::").next())
        .unwrap_or("aws");
    let operation = name
        .rsplit("::")
        .next()
        .and_then(|last| last.strip_suffix("Error"))
        .unwrap_or("unknown");
    (service, operation)
}

/// Describes an SDK error by service, operation, kind and code only.
pub fn describe<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (service, operation) = service_and_operation::<E>();
    let (kind, code) = match err {
        SdkError::TimeoutError(_) => ("timeout", None),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => ("timeout", None),
        SdkError::DispatchFailure(_) => ("unreachable", None),
        SdkError::ResponseError(_) => ("bad_response", None),
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("unknown");
            let kind = if THROTTLED.contains(&code) {
                "throttled"
            } else if CONTENDED.contains(&code) {
                "contended"
            } else if UNAVAILABLE.contains(&code) {
                "unavailable"
            } else {
                "rejected"
            };
            (kind, Some(code.to_owned()))
        }
        _ => ("construction", None),
    };
    Failure {
        service,
        operation,
        kind,
        code,
    }
}

/// Classifies an SDK error: transport trouble, timeouts, throttling and server
/// errors are `Unavailable`; everything else is `Rejected`.
pub fn classify<E, R>(err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let failure = describe(&err);
    // The dependency's own trouble is counted (contention is ours: retried).
    let counted = match failure.kind {
        "throttled" => Some("throttled"),
        "timeout" => Some("timeout"),
        "unreachable" | "bad_response" | "unavailable" => Some("unavailable"),
        _ => None,
    };
    if let Some(kind) = counted {
        crate::metrics::dependency_error(failure.service, kind);
    }
    if failure.is_transient() {
        CallError::Unavailable(failure.to_string())
    } else {
        CallError::Rejected(failure.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_operation_come_from_the_error_type() {
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_kms::operation::sign::SignError;
        assert_eq!(
            service_and_operation::<GetItemError>(),
            ("dynamodb", "GetItem")
        );
        assert_eq!(
            service_and_operation::<TransactWriteItemsError>(),
            ("dynamodb", "TransactWriteItems")
        );
        assert_eq!(service_and_operation::<SignError>(), ("kms", "Sign"));
    }

    #[test]
    fn sdk_settings_bound_every_call() {
        let source = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == var)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let settings = SdkSettings::from_source(&source(&[])).unwrap();
        assert_eq!(
            settings.operation_timeout,
            std::time::Duration::from_secs(3)
        );
        let err = SdkSettings::from_source(&source(&[
            ("SDK_ATTEMPT_TIMEOUT_MS", "2000"),
            ("SDK_OPERATION_TIMEOUT_MS", "1000"),
        ]))
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                var: "SDK_OPERATION_TIMEOUT_MS",
                ..
            }
        ));
    }
}
