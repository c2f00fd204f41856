//! Who is asking: verification keys, token verification, the claims of a verified token, and
//! the identity a statement runs under (token, login mapping, or anonymous). Imports only `pg`
//! (and reports to `audit`).

pub mod assertion;
pub mod claims;
pub mod identity;
pub mod keys;
pub mod principals;
pub mod token;
