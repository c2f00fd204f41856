//! A Casbin policy file read the way PyCasbin's file adapter reads it (persist/adapter.py): one
//! line per rule, `#` comments, fields split at commas outside `(…)`/`[…]` and trimmed.

use crate::pg::errors::{AuthzError, AuthzResult};
use crate::pg::text::printable;

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLine {
    pub number: usize,
    /// `p`, `g` or `g2`.
    pub key: String,
    pub fields: Vec<String>,
}

pub fn line_error(number: usize, text: &str, why: impl Into<String>) -> AuthzError {
    AuthzError::invalid(format!("casbin policy line {number}: {}", why.into()))
        .detail(format!("The line reads: {}", printable(text.trim(), 200)))
}

/// The file's rule lines (comments and blank lines skipped); each starts with one of `keys`.
pub fn parse(text: &str, keys: &[&str]) -> AuthzResult<Vec<PolicyLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut depth = 0usize;
        let mut tokens = vec![String::new()];
        for c in line.chars() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => {
                    depth = depth.checked_sub(1).ok_or_else(|| line_error(number, raw, "unbalanced brackets"))?;
                }
                ',' if depth == 0 => {
                    tokens.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = tokens.last_mut() {
                last.push(c);
            }
        }
        let mut fields: Vec<String> = tokens.into_iter().map(|t| t.trim().to_string()).collect();
        if fields.iter().any(|f| f.is_empty() || f.chars().any(char::is_control)) {
            return Err(line_error(number, raw, "empty field"));
        }
        let key = fields.remove(0);
        if !keys.contains(&key.as_str()) {
            let (last, rest) = keys.split_last().unwrap_or((&"p", &[]));
            let expected = if rest.is_empty() { last.to_string() } else { format!("{} or {last}", rest.join(", ")) };
            return Err(line_error(number, raw, format!("lines start with {expected}")));
        }
        out.push(PolicyLine { number, key, fields });
    }
    Ok(out)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn fields_split_outside_brackets() {
        let lines = super::parse("# c\np, alice, /a/(x,y), GET\n\ng, alice, admin", &["p", "g"]).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].fields, vec!["alice", "/a/(x,y)", "GET"]);
        assert_eq!(lines[1].number, 4);
        assert!(super::parse("p, a, , b", &["p", "g"]).is_err());
        assert!(super::parse("x, a, b", &["p", "g"]).is_err());
    }
}
