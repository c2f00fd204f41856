//! Every error pg_authz raises goes through here: a specific SQLSTATE, a message, a detail and a
//! hint, reported with `ereport`. Code that can fail returns `Result<_, AuthzError>`; only the SQL
//! boundary turns it into an ERROR, so no panic is ever how an error reaches a client.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// A user-facing error. Messages never contain token or key material.
#[derive(Debug, Clone)]
pub struct AuthzError {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type AuthzResult<T> = Result<T, AuthzError>;

impl AuthzError {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        AuthzError { code, message: message.into(), detail: None, hint: None }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// 28000: every failure to establish identity from a token.
    pub fn token(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION, message)
    }

    /// 42501: the caller may not do this.
    pub fn privilege(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message)
    }

    /// 22023: an argument that is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// 55000: the stored configuration itself is unusable (e.g. a registered table was dropped).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, message)
    }

    /// Raise as an ERROR. Never returns.
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.code, self.message, "pg_authz");
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR-level ereport returned")
    }
}

impl From<pgrx::spi::SpiError> for AuthzError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        AuthzError::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "pg_authz could not read its policy tables")
            .detail(e.to_string())
    }
}

/// Unwrap a result at the SQL boundary, raising the error with its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for AuthzResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.raise(),
        }
    }
}
