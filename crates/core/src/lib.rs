//! Onboard's use cases. The server and the CLI call these and nothing below them, so
//! the two can never disagree.

mod app;
mod ca;
mod error;
pub mod settings;

pub use app::{NotReady, Onboard, READINESS_TIMEOUT};
pub use ca::{CaInit, CaSummary, CrlStatus, PublishedCrl};
pub use error::CoreError;
pub use onboard_domain as domain;
pub use settings::{Secret, Settings, SettingsError};
