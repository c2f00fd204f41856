//! Casbin's matching functions with PyCasbin's exact semantics (casbin/util/builtin_operators.py),
//! so that a rule imported from a Casbin policy means in pg_authz what it meant in Casbin.
//!
//! keyMatch2, keyMatch3 and regexMatch are Python regular expressions in PyCasbin: the pattern is
//! rewritten exactly as PyCasbin rewrites it, then translated to the `regex` crate's dialect where
//! the two differ (`$`, `\Z`, class syntax). A pattern that cannot be translated faithfully (back
//! references, look-around, `{` as a literal, class set operations…) is refused, never guessed.

use regex::Regex;

/// The Casbin functions a rule pattern can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    KeyMatch2,
    KeyMatch3,
    RegexMatch,
    GlobMatch,
}

impl Function {
    pub const ALL: [Function; 4] =
        [Function::KeyMatch2, Function::KeyMatch3, Function::RegexMatch, Function::GlobMatch];

    /// The name Casbin's matchers use, which is also the stored pattern's prefix: `keyMatch2(…)`.
    pub fn name(self) -> &'static str {
        match self {
            Function::KeyMatch2 => "keyMatch2",
            Function::KeyMatch3 => "keyMatch3",
            Function::RegexMatch => "regexMatch",
            Function::GlobMatch => "globMatch",
        }
    }

    /// The stored pattern text: `keyMatch2(/users/:id)`. The argument is everything between the
    /// first `(` and the last `)`, verbatim.
    pub fn stored(self, argument: &str) -> String {
        format!("{}({argument})", self.name())
    }

    /// If `text` is a stored function pattern, the function and its argument. `Err` for text that
    /// starts like one (`keyMatch2(`) but does not end with `)`: those prefixes are reserved.
    pub fn parse_stored(text: &str) -> Result<Option<(Function, &str)>, String> {
        for f in Function::ALL {
            let Some(rest) = text.strip_prefix(f.name()).and_then(|r| r.strip_prefix('(')) else { continue };
            return match rest.strip_suffix(')') {
                Some(argument) => Ok(Some((f, argument))),
                None => Err(format!("a pattern starting with \"{}(\" must end with \")\"", f.name())),
            };
        }
        Ok(None)
    }
}

/// A compiled function pattern. Equality is by function and source text.
#[derive(Debug, Clone)]
pub struct FunctionPattern {
    pub function: Function,
    pub source: String,
    regex: Option<Regex>,
    glob: Vec<char>,
}

impl PartialEq for FunctionPattern {
    fn eq(&self, other: &Self) -> bool {
        self.function == other.function && self.source == other.source
    }
}

/// Casbin patterns longer than this are refused: globMatch backtracks, and no route is this long.
pub const MAX_PATTERN_CHARS: usize = 2048;

impl FunctionPattern {
    pub fn compile(function: Function, source: &str) -> Result<FunctionPattern, String> {
        if source.chars().count() > MAX_PATTERN_CHARS {
            return Err(format!("the pattern is longer than {MAX_PATTERN_CHARS} characters"));
        }
        let python = match function {
            Function::KeyMatch2 => Some(key_match2_python_regex(source)?),
            Function::KeyMatch3 => Some(key_match3_python_regex(source)?),
            Function::RegexMatch => Some(source.to_string()),
            Function::GlobMatch => None,
        };
        let regex = match python {
            Some(p) => {
                // re.match(): anchored at the start only.
                let rust = format!("\\A(?:{})", python_regex_to_rust(&p)?);
                Some(regex::RegexBuilder::new(&rust).size_limit(1 << 20).build().map_err(|e| {
                    format!("the regular expression {p:?} cannot be evaluated exactly as Python's re does: {e}")
                })?)
            }
            None => None,
        };
        Ok(FunctionPattern { function, source: source.to_string(), regex, glob: source.chars().collect() })
    }

    pub fn matches(&self, id: &str) -> bool {
        match &self.regex {
            Some(r) => r.is_match(id),
            None => glob_match(&id.chars().collect::<Vec<_>>(), &self.glob),
        }
    }
}

/// PyCasbin's key_match2: `/*` becomes `/.*`, each `:name` becomes `[^\/]+`, `*` alone is `(.*)`,
/// and the result is anchored `^…$` (the rest of the pattern is a Python regex as written).
fn key_match2_python_regex(key2: &str) -> Result<String, String> {
    let replaced = key2.replace("/*", "/.*");
    let names = Regex::new(r"(.*?):[^/]+(.*?)").map_err(|e| e.to_string())?;
    let mut key = names.replace_all(&replaced, "${1}[^\\/]+${2}").into_owned();
    if key == "*" {
        key = "(.*)".into();
    }
    Ok(format!("^{key}$"))
}

/// PyCasbin's key_match3: `/*` becomes `/.*`, each `{name}` becomes `[^\/]+`, anchored `^…$`.
fn key_match3_python_regex(key2: &str) -> Result<String, String> {
    let replaced = key2.replace("/*", "/.*");
    let names = Regex::new(r"(.*?)\{[^/]+?\}(.*?)").map_err(|e| e.to_string())?;
    let key = names.replace_all(&replaced, "${1}[^\\/]+${2}").into_owned();
    Ok(format!("^{key}$"))
}

/// A Python `re` pattern in the `regex` crate's dialect, or why it cannot be translated exactly.
/// Python's `$` also matches before a final newline; `\Z` is the very end; inside a class `[`,
/// `&&`, `--` and `~~` are literal in Python but nesting and set operations in the crate.
fn python_regex_to_rust(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1 + escape(&chars[i + 1..], false, &mut out)?,
            '$' => {
                out.push_str("(?:\\n?\\z)");
                i += 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                // Only groups both dialects read alike: (?:…) and (?P<name>…). Inline flags are
                // refused (Python 3.11 rejects them anywhere but the start; this pattern is wrapped).
                let supported = chars.get(i + 2) == Some(&':')
                    || (chars.get(i + 2) == Some(&'P') && chars.get(i + 3) == Some(&'<'));
                if !supported {
                    return Err("only (?:…) and (?P<name>…) groups are supported (no look-around, flags, comments or back references)".into());
                }
                out.push('(');
                i += 1;
            }
            '[' => {
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` first in a class is literal in both dialects.
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                loop {
                    let Some(&c) = chars.get(i) else { return Err("unterminated character class".into()) };
                    match c {
                        ']' => {
                            out.push(']');
                            i += 1;
                            break;
                        }
                        '\\' => {
                            if i + 1 == chars.len() {
                                return Err("the pattern ends with \\".into());
                            }
                            i += 1 + escape(&chars[i + 1..], true, &mut out)?;
                        }
                        '-' if chars.get(i + 1) == Some(&'-') => {
                            return Err("\"--\" inside a character class is not supported".into());
                        }
                        '[' | '&' | '~' => {
                            out.push('\\');
                            out.push(c);
                            i += 1;
                        }
                        c => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '{' => {
                // Python reads `{` as a literal unless it starts a valid quantifier; the crate
                // refuses it. Only quantifiers are accepted.
                let end = chars[i..].iter().position(|&c| c == '}').map(|p| i + p);
                let body: String = match end {
                    Some(e) => chars[i + 1..e].iter().collect(),
                    None => return Err("a literal \"{\" is not supported (escape it as \\{)".into()),
                };
                let valid = {
                    let mut parts = body.splitn(2, ',');
                    let low = parts.next().unwrap_or("");
                    let high = parts.next();
                    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
                    !body.is_empty() && digits(low) && high.is_none_or(digits) && !(low.is_empty() && high.is_some())
                };
                if !valid || i == 0 {
                    return Err("a literal \"{\" is not supported (escape it as \\{)".into());
                }
                let e = end.unwrap_or(i);
                out.extend(&chars[i..=e]);
                i = e + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One escape (the characters after a `\`), written in the crate's dialect; returns how many
/// characters it took. Letters are escapes only where both dialects agree on them (Python rejects
/// unknown letter escapes, the crate knows others): `\Z` is the crate's `\z`, `\xhh` and
/// `\uhhhh` keep their exact digit counts, and `\b` (a backspace in a Python class) is refused.
fn escape(after: &[char], in_class: bool, out: &mut String) -> Result<usize, String> {
    let Some(&c) = after.first() else { return Err("the pattern ends with \\".into()) };
    let hex = |n: usize| after.len() > n && after[1..=n].iter().all(|h| h.is_ascii_hexdigit());
    let taken = match c {
        '0'..='9' => return Err("back references and octal escapes are not supported".into()),
        'Z' if !in_class => {
            out.push_str("\\z");
            return Ok(1);
        }
        'd' | 'D' | 's' | 'S' | 'w' | 'W' | 'n' | 't' | 'r' | 'f' | 'v' => 1,
        'b' | 'B' | 'A' if !in_class => 1,
        'x' if hex(2) => 3,
        'u' if hex(4) => 5,
        c if c.is_ascii_alphanumeric() => {
            return Err(format!("the escape \\{c} is not supported{}", if in_class { " in a class" } else { "" }))
        }
        _ => 1,
    };
    out.push('\\');
    out.extend(&after[..taken]);
    Ok(taken)
}

/// PyCasbin's glob_match(string, pattern): `*` and `?` never cross `/`, `[…]` (with `!` or `^` to
/// negate, ranges, `\` escapes) matches one character other than `/`, `\` escapes. A port of the
/// Python function, on characters, with its recursion memoized (a suffix pair that failed once
/// fails again), so many stars cost O(id × pattern) instead of exponential time.
pub fn glob_match(string: &[char], pattern: &[char]) -> bool {
    if pattern.is_empty() {
        return string.is_empty();
    }
    glob_match_from(string, pattern, 0, 0, &mut std::collections::HashSet::new())
}

/// glob_match(string[s..], pattern[p..]) for a non-empty pattern suffix.
fn glob_match_from(
    string: &[char],
    pattern: &[char],
    mut s: usize,
    mut p: usize,
    failed: &mut std::collections::HashSet<(usize, usize)>,
) -> bool {
    loop {
        if p == pattern.len() {
            return s == string.len();
        }
        let mut c = pattern[p];
        p += 1;
        match c {
            '?' => {
                if s == string.len() || string[s] == '/' {
                    return false;
                }
                s += 1;
                continue;
            }
            '*' => {
                while p != pattern.len() && c == '*' {
                    c = pattern[p];
                    p += 1;
                }
                if p == pattern.len() {
                    // Python: string.find("/", s) == -1 (the last pattern character, whatever it
                    // is, was consumed by the loop above without being matched).
                    return !string[s..].contains(&'/');
                }
                if c == '/' {
                    match string[s..].iter().position(|&x| x == '/') {
                        None => return false,
                        Some(off) => s += off + 1,
                    }
                }
                while s != string.len() {
                    if !failed.contains(&(s, p)) {
                        if glob_match_from(string, pattern, s, p, failed) {
                            return true;
                        }
                        failed.insert((s, p));
                    }
                    if string[s] == '/' {
                        break;
                    }
                    s += 1;
                }
                continue;
            }
            '[' => {
                if s == string.len() || string[s] == '/' {
                    return false;
                }
                match range_match(pattern, p, string[s]) {
                    None => return false,
                    Some(next) => p = next,
                }
                s += 1;
                continue;
            }
            // An escape takes the next character literally (a trailing `\` is itself).
            '\\' if p != pattern.len() => {
                c = pattern[p];
                p += 1;
            }
            _ => {}
        }
        if s == string.len() || c != string[s] {
            return false;
        }
        s += 1;
    }
}

/// PyCasbin's range_match: the index after the class when `test` is in it, else `None`.
fn range_match(pattern: &[char], mut p: usize, test: char) -> Option<usize> {
    if p == pattern.len() {
        return None;
    }
    let negate = pattern[p] == '!' || pattern[p] == '^';
    if negate {
        p += 1;
    }
    let mut ok = false;
    loop {
        if p == pattern.len() {
            break;
        }
        let mut c = pattern[p];
        p += 1;
        if c == ']' {
            break;
        }
        if c == '\\' {
            if p == pattern.len() {
                return None;
            }
            c = pattern[p];
            p += 1;
        }
        if p != pattern.len() && pattern[p] == '-' && p + 1 != pattern.len() && pattern[p + 1] != ']' {
            let mut c2 = pattern[p + 1];
            p += 2;
            if c2 == '\\' {
                if p == pattern.len() {
                    return None;
                }
                c2 = pattern[p];
                p += 1;
            }
            if c <= test && test <= c2 {
                ok = true;
            }
        } else if c == test {
            ok = true;
        }
    }
    if ok == negate {
        None
    } else {
        Some(p)
    }
}

/// Casbin's keyMatch as a native glob: everything up to the first `*` is a literal prefix and the
/// rest of the pattern is ignored (PyCasbin compares only `key2[:i]`); without `*`, equality.
pub fn key_match_as_native_glob(key2: &str) -> String {
    match key2.find('*') {
        Some(i) => format!("{}*", escape_native(&key2[..i])),
        None => escape_native(key2),
    }
}

/// A literal id as a native pattern (`*`, `?` and `\` escaped).
pub fn escape_native(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for (i, c) in literal.chars().enumerate() {
        // A literal that starts like a reserved pattern prefix (`keyMatch2(`, `domain(`) gets its
        // first character escaped, so it stays a literal.
        if c == '\\' || c == '?' || c == '*' || (i == 0 && starts_reserved(literal)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Does this text start with a reserved pattern prefix (a Casbin function or `domain(`)?
pub fn starts_reserved(text: &str) -> bool {
    text.starts_with(DOMAIN_PREFIX) || Function::ALL.iter().any(|f| text.starts_with(&format!("{}(", f.name())))
}

/// Stored prefix of a pattern restricted to one Casbin domain: `domain(tenant1)inner`.
pub const DOMAIN_PREFIX: &str = "domain(";

/// Between a domain and the object in an id (`tenant1::data1`) and a domain-qualified role name
/// (`tenant1::admin`). Domains containing it are refused, so ids split unambiguously.
pub const DOMAIN_SEPARATOR: &str = "::";

/// `domain(<escaped>)`: `\` escapes `)` and `\` in the domain.
pub fn stored_domain_prefix(domain: &str) -> String {
    let mut out = String::from(DOMAIN_PREFIX);
    for c in domain.chars() {
        if c == ')' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push(')');
    out
}

/// Split `domain(<escaped>)inner` (after the prefix) into the domain and the inner pattern text.
pub fn parse_stored_domain(after_prefix: &str) -> Result<(String, &str), String> {
    let mut domain = String::new();
    let mut chars = after_prefix.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => domain.push(e),
                None => break,
            },
            ')' => {
                if domain.is_empty() || domain.contains(DOMAIN_SEPARATOR) {
                    return Err(format!("a domain is non-empty and never contains \"{DOMAIN_SEPARATOR}\""));
                }
                return Ok((domain, &after_prefix[i + 1..]));
            }
            c => domain.push(c),
        }
    }
    Err("a pattern starting with \"domain(\" needs the closing \")\" of the domain".into())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::*;

    fn m(f: Function, pattern: &str, id: &str) -> bool {
        FunctionPattern::compile(f, pattern).unwrap().matches(id)
    }

    #[pg_test]
    fn key_match2_and_3_follow_pycasbin() {
        assert!(m(Function::KeyMatch2, "/foo/:id", "/foo/1"));
        assert!(!m(Function::KeyMatch2, "/foo/:id", "/foo/1/2"));
        assert!(m(Function::KeyMatch2, "/foo/*", "/foo/1/2"));
        assert!(m(Function::KeyMatch2, "*", "anything"));
        assert!(m(Function::KeyMatch2, "/foo", "/foo\n"));
        assert!(m(Function::KeyMatch3, "/foo/{id}/bar", "/foo/7/bar"));
        assert!(!m(Function::KeyMatch3, "/foo/{id}", "/foo/"));
        assert!(m(Function::RegexMatch, "ab", "abc"));
        assert!(!m(Function::RegexMatch, "b", "abc"));
        assert!(FunctionPattern::compile(Function::RegexMatch, "(?=x)").is_err());
        assert!(FunctionPattern::compile(Function::KeyMatch2, "/a/{x}").is_err());
        assert!(FunctionPattern::compile(Function::RegexMatch, "a\\z").is_err());
        assert!(m(Function::RegexMatch, "a\\d\\Z", "a1"));
        assert!(m(Function::RegexMatch, "[\\x41-\\x43]", "B"));
    }

    #[pg_test]
    fn glob_match_follows_pycasbin() {
        let g = |s: &str, p: &str| glob_match(&s.chars().collect::<Vec<_>>(), &p.chars().collect::<Vec<_>>());
        assert!(g("/foo/bar", "/foo/*"));
        assert!(!g("/foo/bar/baz", "/foo/*"));
        assert!(g("/foo/bar", "/foo/b?r"));
        assert!(g("/foo/b", "/foo/[a-c]"));
        assert!(!g("/foo/d", "/foo/[a-c]"));
        assert!(g("*", "\\*"));
        let long: String = "a".repeat(200);
        assert!(!g(&long, &format!("{}b", "*a".repeat(40))));
    }

    #[pg_test]
    fn key_match_is_a_prefix_glob() {
        assert_eq!(key_match_as_native_glob("/foo/*/bar"), "/foo/*");
        assert_eq!(key_match_as_native_glob("a?c"), "a\\?c");
        assert_eq!(escape_native("keyMatch2(x)"), "\\keyMatch2(x)");
    }
}
