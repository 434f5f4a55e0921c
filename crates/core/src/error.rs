//! The use cases' errors, in terms a caller can act on. The server maps each kind to
//! an HTTP status in one place; the CLI to a message and an exit code.

use onboard_domain::{InvalidValue, RepoError};
use onboard_registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The input is wrong; nothing was changed.
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// An upload that is not a valid ESP32 application image; the error names
    /// what is wrong. Nothing was changed.
    #[error("invalid firmware image: {0}")]
    InvalidFirmware(#[from] onboard_firmware::ImageError),
    /// A body or file larger than its setting allows; nothing was changed.
    #[error("the {what} is larger than {setting} ({limit} bytes)")]
    TooLarge {
        what: &'static str,
        setting: &'static str,
        limit: u64,
    },
    /// The credential presented is missing, unknown or not usable. The code says
    /// which (for the audit log and metrics); callers are told only that it failed.
    #[error("the credential is not valid ({0})")]
    Unauthorized(&'static str),
    /// The request contradicts the current state (a taken serial, a used token).
    #[error("{0}")]
    Conflict(String),
    /// A registration for a serial that belongs to a device, without proof that
    /// the caller is that device: refused (409) and audited as a possible
    /// takeover.
    #[error("{0}")]
    Takeover(String),
    /// Storage or another dependency cannot be reached now; retrying may help.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The change is committed, but the broker (or AWS IoT, when on) could not be
    /// updated yet; the reconciler applies it once it is back. `action` names the
    /// change (`device.revoke`), `detail` what failed (for logs only).
    #[error("{action} recorded; it reaches the broker (and AWS IoT, when on) once they are back, retried automatically: {detail}")]
    Pending {
        action: &'static str,
        detail: String,
    },
    /// The cloud registry (AWS IoT Core) failed or cannot be reached; the message
    /// names the call and says what was kept. Retrying may help.
    #[error("{0}")]
    Cloud(String),
    /// Settings or local state prevent the operation (bad CA key, unreadable file).
    #[error("{0}")]
    Setup(String),
    /// A fault on our side that the caller cannot fix.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// A stable code for audit records and metric labels.
    pub fn reason_code(&self) -> &'static str {
        match self {
            CoreError::Invalid(_) => "invalid_input",
            CoreError::NotFound { .. } => "not_found",
            CoreError::InvalidFirmware(_) => "invalid_firmware",
            CoreError::TooLarge { .. } => "too_large",
            CoreError::Unauthorized(code) => code,
            CoreError::Conflict(_) => "conflict",
            CoreError::Takeover(_) => "possible_takeover",
            CoreError::Unavailable(_) => "unavailable",
            CoreError::Pending { .. } => "pending",
            CoreError::Cloud(_) => "aws_unavailable",
            CoreError::Setup(_) => "setup",
            CoreError::Internal(_) => "internal",
        }
    }
}

impl From<RepoError> for CoreError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound { entity } => CoreError::NotFound { entity },
            RepoError::Conflict { entity, .. } => {
                CoreError::Conflict(format!("the {entity} conflicts with an existing one"))
            }
            RepoError::Unavailable(m) => CoreError::Unavailable(m),
            RepoError::Corrupt(m) | RepoError::Database(m) => CoreError::Internal(m),
        }
    }
}

impl From<RegistryError> for CoreError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Url(m) => CoreError::Setup(format!("invalid database URL: {m}")),
            RegistryError::Connect(m) | RegistryError::Unavailable(m) => CoreError::Unavailable(m),
            RegistryError::Migration(m) => CoreError::Setup(format!("migration failed: {m}")),
        }
    }
}
