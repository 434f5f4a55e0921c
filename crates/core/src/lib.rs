//! Onboard's use cases. The server and the CLI call these and nothing below them, so
//! the two can never disagree.

mod app;
mod error;
pub mod settings;

pub use app::{NotReady, Onboard, READINESS_TIMEOUT};
pub use error::CoreError;
pub use onboard_domain as domain;
pub use settings::{Secret, Settings, SettingsError};
