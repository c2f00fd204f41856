//! What an identity may do: the policy model loaded from the policy tables, the resolver that
//! turns grants and rules into permitted sets and decisions, and administration (the management
//! permission, delegation limits, Casbin import). Imports `pg` and `auth`.

pub mod admin;
pub mod casbin;
pub mod key_match;
pub mod lineage;
pub mod model;
pub mod resolve;
