//! Making PostgreSQL enforce it: the row filter the policies call, the planner support function,
//! plan-time elision of the filter, executor and utility hooks, the parallel handoff, the policy
//! templates, and the extension's lifecycle. Imports everything below it.

pub mod cluster;
pub mod elision;
pub mod handoff;
pub mod hooks;
pub mod lifecycle;
pub mod per_row;
pub mod row_filter;
pub mod support;
pub mod templates;
