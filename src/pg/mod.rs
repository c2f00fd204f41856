//! The base layer: talking to PostgreSQL. Settings, the generation-tagged caches and their
//! invalidation, errors, the privileged executor, SPI and catalog helpers, statement boundaries
//! and redaction. Imports nothing from the layers above; they register callbacks here instead.

pub mod cache;
pub mod changes;
pub mod citus;
pub mod db;
pub mod errors;
pub mod nodes;
pub mod privileged;
pub mod redact;
pub mod settings;
pub mod statement;
pub mod text;
