//! Applying an import plan through the management functions (so every change passes the same
//! checks as the individual calls), recording what it created in `authz.casbin_imported`, and
//! undoing what earlier imports created (`replace => true`).

use pgrx::prelude::*;

use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::policy::casbin::plan::{Op, Step};

fn exists(query: &str, args: &[pgrx::datum::DatumWithOid]) -> Result<bool, pgrx::spi::SpiError> {
    Ok(Spi::get_one_with_args::<bool>(query, args)?.unwrap_or(false))
}

/// Run one operation; what did not exist before is recorded as imported.
fn run(op: &Op) -> Result<(), pgrx::spi::SpiError> {
    match op {
        Op::Role(name) => Spi::run_with_args("SELECT authz._ensure_role($1)", &[name.as_str().into()]),
        Op::Principal(name) => {
            if !exists(
                "SELECT EXISTS (SELECT FROM authz.principals p WHERE p.id OPERATOR(pg_catalog.=) $1)",
                &[name.as_str().into()],
            )? {
                Spi::run_with_args("SELECT authz.create_principal($1)", &[name.as_str().into()])?;
            }
            Ok(())
        }
        Op::Assign { principal, role } => {
            let find = "FROM authz.role_assignments a WHERE a.principal OPERATOR(pg_catalog.=) $1
                        AND a.role OPERATOR(pg_catalog.=) $2 AND a.resource_type IS NULL";
            let existed =
                exists(&format!("SELECT EXISTS (SELECT {find})"), &[principal.as_str().into(), role.as_str().into()])?;
            Spi::run_with_args("SELECT authz.assign_role($1, $2)", &[principal.as_str().into(), role.as_str().into()])?;
            if !existed {
                Spi::run_with_args(
                    &format!("INSERT INTO authz.casbin_imported (assignment_id) SELECT a.id {find}"),
                    &[principal.as_str().into(), role.as_str().into()],
                )?;
            }
            Ok(())
        }
        Op::Inherit { role, inherits } => {
            let existed = exists(
                "SELECT EXISTS (SELECT FROM authz.role_inheritance i WHERE i.role OPERATOR(pg_catalog.=) $1
                   AND i.inherits OPERATOR(pg_catalog.=) $2)",
                &[role.as_str().into(), inherits.as_str().into()],
            )?;
            Spi::run_with_args(
                "SELECT authz.add_inheritance($1, $2)",
                &[role.as_str().into(), inherits.as_str().into()],
            )?;
            if !existed {
                Spi::run_with_args(
                    "INSERT INTO authz.casbin_imported (role, inherits) VALUES ($1, $2)",
                    &[role.as_str().into(), inherits.as_str().into()],
                )?;
            }
            Ok(())
        }
        Op::Rule { role, resource_type, pattern, action, allow } => {
            let effect = if *allow { "allow" } else { "deny" };
            let args = || -> Vec<pgrx::datum::DatumWithOid> {
                vec![
                    role.as_str().into(),
                    resource_type.as_str().into(),
                    pattern.as_str().into(),
                    action.as_str().into(),
                ]
            };
            let mut with_effect = args();
            with_effect.push(effect.into());
            let existed = exists(
                "SELECT EXISTS (SELECT FROM authz.rules r WHERE r.role OPERATOR(pg_catalog.=) $1
                   AND r.resource_type OPERATOR(pg_catalog.=) $2 AND r.pattern OPERATOR(pg_catalog.=) $3
                   AND r.action OPERATOR(pg_catalog.=) $4 AND r.effect OPERATOR(pg_catalog.=) $5)",
                &with_effect,
            )?;
            let id = Spi::get_one_with_args::<i64>(
                if *allow { "SELECT authz.allow($1, $2, $3, $4)" } else { "SELECT authz.deny($1, $2, $3, $4)" },
                &args(),
            )?;
            if !existed {
                Spi::run_with_args("INSERT INTO authz.casbin_imported (rule_id) VALUES ($1)", &[id.into()])?;
            }
            Ok(())
        }
    }
}

/// Roles and principals first, then rules, and only then what confers roles (inheritance,
/// assignments): a role is conferred with the rules it will carry, so a delegate's right to
/// confer it is judged on everything the import gives it.
fn rank(op: &Op) -> u8 {
    match op {
        Op::Role(_) | Op::Principal(_) => 0,
        Op::Rule { .. } => 1,
        Op::Inherit { .. } => 2,
        Op::Assign { .. } => 3,
    }
}

/// Apply every step; an error raised inside a management function is re-raised naming the line,
/// keeping its SQLSTATE. The import is one statement: nothing is half-imported.
pub fn apply(steps: &[Step]) {
    let mut ordered: Vec<&Step> = steps.iter().collect();
    ordered.sort_by_key(|s| rank(&s.op));
    for step in ordered {
        pgrx::PgTryBuilder::new(|| {
            if let Err(e) = run(&step.op) {
                AuthzError::invalid("the operation could not be applied").detail(e.to_string()).raise();
            }
        })
        .catch_others(|cause| {
            let (code, message) = match &cause {
                pgrx::pg_sys::panic::CaughtError::PostgresError(e)
                | pgrx::pg_sys::panic::CaughtError::ErrorReport(e)
                | pgrx::pg_sys::panic::CaughtError::RustPanic { ereport: e, .. } => {
                    (e.sql_error_code(), e.message().to_string())
                }
            };
            let what = if step.line == 0 {
                "the model's policy effect".to_string()
            } else {
                format!("casbin policy line {}", step.line)
            };
            AuthzError::new(code, format!("{what} could not be applied")).detail(message).raise()
        })
        .execute();
    }
}

/// Remove what earlier imports created, through the same checks as the individual calls:
/// assignments and inheritance first (their removal is refused to a delegate while a deny they
/// carry exists), then rules.
pub fn remove_previous_imports() -> AuthzResult<()> {
    let result = (|| -> Result<(), pgrx::spi::SpiError> {
        Spi::run(
            "SELECT authz.unassign_role(a.principal, a.role, a.resource_type, a.resource_id)
             FROM authz.role_assignments a JOIN authz.casbin_imported i ON i.assignment_id OPERATOR(pg_catalog.=) a.id",
        )?;
        Spi::run(
            "SELECT authz.remove_inheritance(i.role, i.inherits) FROM authz.casbin_imported i WHERE i.inherits IS NOT NULL",
        )?;
        Spi::run("SELECT authz._require_manage('rules')")?;
        Spi::run(
            "DELETE FROM authz.rules r USING authz.casbin_imported i WHERE r.id OPERATOR(pg_catalog.=) i.rule_id",
        )?;
        Spi::run("DELETE FROM authz.casbin_imported")
    })();
    result.map_err(|e| AuthzError::invalid("the previous Casbin import could not be replaced").detail(e.to_string()))
}

/// Keep the model enforce() answers with.
pub fn store_model(model: &str, resource_type: Option<&str>, object_types: Vec<String>) {
    Spi::run_with_args(
        "INSERT INTO authz.casbin_model AS m (singleton, model, resource_type, object_types)
         VALUES (true, $1, $2, $3)
         ON CONFLICT (singleton) DO UPDATE SET model = excluded.model, resource_type = excluded.resource_type,
             object_types = excluded.object_types, imported_at = pg_catalog.now()",
        &[model.into(), resource_type.into(), object_types.into()],
    )
    .map_err(AuthzError::from)
    .or_raise();
}
