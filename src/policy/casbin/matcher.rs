//! A Casbin matcher expression, read as a conjunction of the terms pg_authz can map: calls
//! `f(r.x, p.y[, r.z])`, equalities `r.x == p.y`, and wildcards `(r.x == p.y || p.y == "*")`.
//! Everything else (`||` elsewhere, `!`, `!=`, arithmetic, `in`, attribute access…) is refused by
//! name: its meaning would not survive the import.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Open,
    Close,
    Comma,
    And,
    Or,
    Eq,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '&' if chars.get(i + 1) == Some(&'&') => {
                out.push(Token::And);
                i += 2;
            }
            '|' if chars.get(i + 1) == Some(&'|') => {
                out.push(Token::Or);
                i += 2;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Eq);
                i += 2;
            }
            '"' | '\'' => {
                let end = chars[i + 1..].iter().position(|&x| x == c).ok_or("an unterminated string")?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                if s.contains('\\') {
                    return Err(format!("the string {c}{s}{c} has escapes"));
                }
                out.push(Token::Str(s));
                i += end + 2;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ => {
                let rest: String = chars[i..].iter().take(8).collect();
                return Err(format!("the operator at \"{rest}\" has no pg_authz equivalent"));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Call(String, Vec<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Field(String),
    Str(String),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |items: &[Expr], sep: &str| items.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(sep);
        match self {
            Expr::And(items) => write!(f, "({})", join(items, " && ")),
            Expr::Or(items) => write!(f, "({})", join(items, " || ")),
            Expr::Call(name, args) => write!(f, "{name}({})", join(args, ", ")),
            Expr::Eq(a, b) => write!(f, "{a} == {b}"),
            Expr::Field(name) => write!(f, "{name}"),
            Expr::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn expect(&mut self, want: Token) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            other => Err(format!("expected {want:?}, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Open) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(Token::Close)?;
            return Ok(inner);
        }
        let left = self.operand()?;
        if self.peek() == Some(&Token::Eq) {
            self.at += 1;
            let right = self.operand()?;
            return Ok(Expr::Eq(Box::new(left), Box::new(right)));
        }
        match left {
            Expr::Call(..) => Ok(left),
            other => Err(format!("{other} alone is not a condition")),
        }
    }

    fn operand(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Ident(name)) => {
                if self.peek() == Some(&Token::Open) {
                    self.at += 1;
                    let mut args = Vec::new();
                    if self.peek() != Some(&Token::Close) {
                        loop {
                            args.push(self.operand()?);
                            match self.next() {
                                Some(Token::Comma) => continue,
                                Some(Token::Close) => break,
                                other => return Err(format!("expected , or ) in {name}(), found {other:?}")),
                            }
                        }
                    } else {
                        self.at += 1;
                    }
                    Ok(Expr::Call(name, args))
                } else {
                    Ok(Expr::Field(name))
                }
            }
            other => Err(format!("expected a field, string or function call, found {other:?}")),
        }
    }
}

/// One conjunct of a matcher pg_authz understands. Field names are without their `r.`/`p.`.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// `name(r.x, p.y)` or `g(r.x, p.y, r.z)`.
    Call { name: String, r: String, p: String, domain: Option<String> },
    /// `r.x == p.y`, or with `or_any` `(r.x == p.y || p.y == "*")`.
    Equal { r: String, p: String, or_any: bool },
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Call { name, r, p, domain: None } => write!(f, "{name}(r.{r}, p.{p})"),
            Term::Call { name, r, p, domain: Some(d) } => write!(f, "{name}(r.{r}, p.{p}, r.{d})"),
            Term::Equal { r, p, or_any: false } => write!(f, "r.{r} == p.{p}"),
            Term::Equal { r, p, or_any: true } => write!(f, "(r.{r} == p.{p} || p.{p} == \"*\")"),
        }
    }
}

fn field<'a>(e: &'a Expr, prefix: &str) -> Option<&'a str> {
    match e {
        Expr::Field(name) => name.strip_prefix(prefix).filter(|n| !n.is_empty() && !n.contains('.')),
        _ => None,
    }
}

/// `r.x == p.y` in either order.
fn equality(e: &Expr) -> Option<(String, String)> {
    let Expr::Eq(a, b) = e else { return None };
    match (field(a, "r."), field(b, "p."), field(b, "r."), field(a, "p.")) {
        (Some(r), Some(p), _, _) | (_, _, Some(r), Some(p)) => Some((r.to_string(), p.to_string())),
        _ => None,
    }
}

/// `p.y == "*"` in either order.
fn wildcard(e: &Expr) -> Option<String> {
    let Expr::Eq(a, b) = e else { return None };
    match (a.as_ref(), b.as_ref()) {
        (f, Expr::Str(s)) | (Expr::Str(s), f) if s == "*" => field(f, "p.").map(str::to_string),
        _ => None,
    }
}

fn term(e: &Expr) -> Result<Term, String> {
    let unsupported = || format!("{e} cannot be mapped onto pg_authz rules");
    match e {
        Expr::Call(name, args) => {
            let r = args.first().and_then(|a| field(a, "r.")).ok_or_else(unsupported)?;
            let p = args.get(1).and_then(|a| field(a, "p.")).ok_or_else(unsupported)?;
            let domain = match args.get(2) {
                None => None,
                Some(a) => Some(field(a, "r.").ok_or_else(unsupported)?.to_string()),
            };
            if args.len() > 3 {
                return Err(unsupported());
            }
            Ok(Term::Call { name: name.clone(), r: r.to_string(), p: p.to_string(), domain })
        }
        Expr::Eq(..) => {
            let (r, p) = equality(e).ok_or_else(unsupported)?;
            Ok(Term::Equal { r, p, or_any: false })
        }
        Expr::Or(items) if items.len() == 2 => {
            let pair = [(&items[0], &items[1]), (&items[1], &items[0])];
            for (eq, any) in pair {
                if let (Some((r, p)), Some(w)) = (equality(eq), wildcard(any)) {
                    if w == p {
                        return Ok(Term::Equal { r, p, or_any: true });
                    }
                }
            }
            Err(unsupported())
        }
        _ => Err(unsupported()),
    }
}

/// The matcher's conjuncts, or what in it cannot be mapped.
pub fn parse(text: &str) -> Result<Vec<Term>, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at < parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.at]));
    }
    let mut conjuncts = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        match e {
            Expr::And(items) => stack.extend(items.into_iter().rev()),
            other => conjuncts.push(other),
        }
    }
    conjuncts.iter().map(term).collect()
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::*;

    #[pg_test]
    fn documented_matchers_read_as_terms() {
        let t = parse(
            "g(r.sub, p.sub, r.dom) && r.dom == p.dom && keyMatch2(r.obj, p.obj) && (r.act == p.act || p.act == \"*\")",
        )
        .unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[3], Term::Equal { r: "act".into(), p: "act".into(), or_any: true });
        assert!(parse("r.sub == p.sub || r.obj == p.obj").is_err());
        assert!(parse("r.sub != p.sub").is_err());
        assert!(parse("r.sub.Age > 18").is_err());
    }
}
