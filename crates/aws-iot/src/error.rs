//! AWS failures in the terms the core needs: which call failed, and whether a
//! retry may help.

use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use onboard_domain::PortError;

/// One AWS IoT call that failed (after the SDK's retries).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AWS IoT {call} failed: {message}")]
pub struct AwsError {
    /// The API call, e.g. `CreateThing`.
    pub call: &'static str,
    /// The service's error code (`ResourceNotFoundException`, ...), when it answered.
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub(crate) fn new(call: &'static str, message: impl Into<String>) -> Self {
        Self {
            call,
            code: None,
            message: message.into(),
        }
    }

    pub(crate) fn from_sdk<E, R>(call: &'static str, e: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (code, message) = match &e {
            SdkError::ServiceError(s) => {
                let err = s.err();
                (
                    err.code().map(str::to_owned),
                    err.message()
                        .unwrap_or("the service refused the call")
                        .to_owned(),
                )
            }
            SdkError::TimeoutError(_) => (None, "timed out".to_owned()),
            SdkError::DispatchFailure(d) => (
                None,
                if d.is_timeout() {
                    "timed out".to_owned()
                } else if d.is_io() {
                    "cannot reach AWS IoT (connection failed)".to_owned()
                } else {
                    "the request could not be sent".to_owned()
                },
            ),
            SdkError::ResponseError(_) => (None, "the answer could not be read".to_owned()),
            SdkError::ConstructionFailure(_) => (None, "the request could not be built".to_owned()),
            _ => (None, "unexpected SDK error".to_owned()),
        };
        Self {
            call,
            code,
            message,
        }
    }

    pub(crate) fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub(crate) fn not_found(&self) -> bool {
        self.is("ResourceNotFoundException")
    }

    pub(crate) fn already_exists(&self) -> bool {
        self.is("ResourceAlreadyExistsException")
    }
}

impl From<AwsError> for PortError {
    fn from(e: AwsError) -> Self {
        PortError::Unavailable(e.to_string())
    }
}
