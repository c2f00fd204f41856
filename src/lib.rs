//! pg_authz: verified JWT identity and row-level authorization enforced inside PostgreSQL.
//! This file only wires the layers together (ARCHITECTURE.md): `pg` (talking to PostgreSQL) <-
//! `auth` (who is asking) <- `policy` (what they may do) <- `enforce` (PostgreSQL doing it);
//! `audit` observes. Each layer imports only the ones below it.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use pgrx::prelude::*;

mod audit;
mod auth;
mod enforce;
mod pg;
mod policy;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);
pgrx::extension_sql_file!("../sql/doctor.sql", name = "doctor", requires = ["api", "soft_delete_and_views"]);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pg::settings::init();
    pg::cache::init();
    pg::redact::init();
    enforce::hooks::init();
    enforce::elision::init();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn settings_are_registered() {
        let n = Spi::get_one::<i64>("SELECT count(*) FROM pg_settings WHERE name LIKE 'authz.%'").unwrap();
        assert_eq!(n, Some(8)); // authz.parallel_handoff is internal (GUC_NO_SHOW_ALL)
    }
}

/// This module is required by `cargo pgrx test` invocations.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
