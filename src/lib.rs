//! pg_authz: verified JWT identity and row-level authorization enforced inside PostgreSQL.
//! This file only wires the modules together; each concern lives in its own module.

use pgrx::prelude::*;

mod audit;
mod cache;
mod claims;
mod db;
mod elision;
mod errors;
mod executor;
mod fasthash;
mod gucs;
mod handoff;
mod identity;
mod keys;
mod lifecycle;
mod model;
mod permits;
mod policy;
mod privileged;
mod redact;
mod resolve;
mod templates;
mod token;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!("../sql/api.sql", name = "api", finalize);
pgrx::extension_sql_file!("../sql/doctor.sql", name = "doctor", requires = ["api", "soft_delete_and_views"]);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    cache::init();
    executor::init();
    redact::init();
}

/// Validate a rule pattern (22023 when malformed); used by the management functions.
#[pg_extern(immutable, parallel_safe)]
fn _validate_pattern(pattern: &str) {
    use errors::OrRaise;
    model::Pattern::parse(pattern).map(|_| ()).or_raise();
}

/// Per-backend cache sizes, for monitoring memory (tokens verified, sets resolved).
#[pg_extern(volatile)]
fn cache_stats() -> pgrx::JsonB {
    pgrx::JsonB(serde_json::json!({
        "generation": cache::generation(),
        "tokens": token::cached_tokens(),
        "permission_sets": resolve::cached_sets(),
    }))
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
