//! `authz.enforce(VARIADIC text[])`: Casbin's enforce() with the imported model. The request is
//! mapped exactly as the import mapped the policy (object routed to its type, domain-qualified
//! id) and decided by pg_authz's resolver, so enforce() and check() can never disagree.

use pgrx::prelude::*;

use crate::auth::identity::{self, Identity};
use crate::pg::db;
use crate::pg::errors::{AuthzError, AuthzResult, OrRaise};
use crate::pg::privileged::{self, Rights};
use crate::pg::text::printable;
use crate::policy::casbin::model_file;
use crate::policy::casbin::plan::{qualified, route_object};
use crate::policy::key_match::DOMAIN_SEPARATOR;
use crate::policy::resolve;

struct StoredModel {
    text: String,
    resource_type: Option<String>,
    object_types: Vec<String>,
}

fn stored_model() -> AuthzResult<StoredModel> {
    let row = privileged::run(Rights::Superuser, || {
        Spi::connect(|client| {
            let table = client.select(
                "SELECT m.model, m.resource_type, m.object_types FROM authz.casbin_model m",
                Some(1),
                &[],
            )?;
            if table.is_empty() {
                return Ok::<_, pgrx::spi::SpiError>(None);
            }
            let row = table.first();
            Ok(Some(StoredModel {
                text: row.get::<String>(1)?.unwrap_or_default(),
                resource_type: row.get::<String>(2)?,
                object_types: row.get::<Vec<String>>(3)?.unwrap_or_default(),
            }))
        })
    })?;
    row.ok_or_else(|| {
        AuthzError::config("no Casbin model has been imported")
            .hint("Import one with authz.import_casbin(policy, model, resource_type).")
    })
}

/// The identity a request's subject stands for: the caller itself, or (for superusers and
/// `authz_admin` members only) any principal.
fn subject_identity(subject: &str) -> AuthzResult<Identity> {
    let me = identity::current()?;
    if me.user_id.as_deref() == Some(subject) {
        return Ok(me);
    }
    if db::is_privileged(db::outer_user()) {
        return Ok(Identity::of_principal(subject));
    }
    Err(AuthzError::privilege(format!("permission denied to enforce for subject \"{}\"", printable(subject, 64)))
        .detail(format!("The caller's identity is {}.", me.user_id.as_deref().unwrap_or("anonymous")))
        .hint("Ask for your own subject (authz.user_id()); superusers and authz_admin members may ask for any."))
}

fn decide(request: &[String]) -> AuthzResult<bool> {
    let stored = stored_model()?;
    let model = model_file::parse(&stored.text)?;
    if request.len() != model.request.len() {
        return Err(AuthzError::invalid(format!(
            "authz.enforce() takes {} values for the model's request definition \"{}\", not {}",
            model.request.len(),
            model.request_definition(),
            request.len()
        )));
    }
    let slots = model.slots();
    let subject = &request[slots.subject];
    let identity = subject_identity(subject)?;
    let action = &request[slots.action];
    let known: std::collections::HashSet<String> = stored.object_types.iter().cloned().collect();
    let Some((resource_type, object)) = route_object(&request[slots.object], stored.resource_type.as_deref(), &known)
    else {
        return Ok(false); // no imported rule can name an object the model cannot route
    };
    let domain = slots.domain.map(|i| request[i].as_str());
    if domain.is_some_and(|d| d.is_empty() || d.contains(DOMAIN_SEPARATOR)) || action.is_empty() {
        return Ok(false); // no imported line can have such a domain or action
    }
    let id = qualified(domain, object);
    let decision = resolve::decide(&identity, resource_type, &id, action)?;
    crate::audit::decision(
        &identity.actor(),
        resource_type,
        action,
        Some(&id),
        decision.allowed,
        Some(&decision.reason),
    );
    Ok(decision.allowed)
}

/// Casbin's enforce(): the request's values in the order of the imported model's request
/// definition, subject first (`authz.enforce('alice', 'data1', 'read')`).
#[pg_extern(stable)]
fn enforce(request: VariadicArray<'_, String>) -> bool {
    let mut values = Vec::new();
    for v in request.iter() {
        match v {
            Some(v) if !v.chars().any(char::is_control) => values.push(v),
            _ => AuthzError::invalid("authz.enforce() values must not be NULL or contain control characters").raise(),
        }
    }
    decide(&values).or_raise()
}
