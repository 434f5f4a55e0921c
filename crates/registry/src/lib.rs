//! Persistence for Onboard with diesel: one code path over PostgreSQL (production,
//! many replicas) and SQLite (the embedded default), chosen by the URL scheme.
//!
//! [`Database`] implements the domain's [`onboard_domain::Store`]; its transaction
//! handle, [`DbConnection`], implements every repository port.

mod console;
mod db;
mod error;
mod group;
mod repos;
mod rows;
pub mod schema;

pub use console::ConsoleSessionRow;
pub use db::{
    init_openssl_before_libpq, pg_connect, Backend, Conn, ConnectionManager, Database,
    DbConnection, PoolConnection, PoolOptions,
};
pub use error::RegistryError;
pub use group::GroupStats;
pub use repos::keys::{key_use_shards, KEY_USE_SHARDS};

#[cfg(feature = "test-support")]
pub mod testing;
