//! Onboard's use cases. The server and the CLI call these and nothing below them, so
//! the two can never disagree.

pub mod settings;

pub use settings::{Secret, Settings, SettingsError};
