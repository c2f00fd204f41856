//! Reading a verified JWT payload strictly. A member name repeated within any object rejects the
//! token: RFC 7519 §4 lets a parser either reject duplicates or keep the last one, and keeping one
//! lets two parsers read two different `sub`s out of the same signed token.
//!
//! Verification needs a handful of top-level claims, so it scans the payload once without building
//! a JSON tree (building and dropping the tree was about a fifth of an uncached HS256
//! verification, measured with perf); the tree is built only when `authz.claims()` or
//! `authz.claim()` asks for it, from the very bytes the scan accepted.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use rustc_hash::FxHashSet as FastSet;

/// The claims verification reads, as found at the top level of the payload.
#[derive(Default)]
pub struct Scanned {
    pub is_object: bool,
    pub exp: Option<Value>,
    pub nbf: Option<Value>,
    pub iss: Option<Value>,
    pub aud: Option<Value>,
    /// The member named exactly like the configured user claim.
    pub user: Option<Value>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ClaimsError {
    NotJson,
    DuplicateName,
}

fn classify(e: serde_json::Error) -> ClaimsError {
    // The only data error the visitors below raise is a repeated name; everything else is syntax.
    if e.classify() == serde_json::error::Category::Data {
        ClaimsError::DuplicateName
    } else {
        ClaimsError::NotJson
    }
}

/// One pass over the payload: every object checked for repeated names, the needed claims kept.
pub fn scan(payload: &[u8], user_claim: &str) -> Result<Scanned, ClaimsError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let scanned = TopLevel { user_claim }.deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(scanned)
}

/// The whole payload as JSON (for a payload `scan` accepted, this cannot fail).
pub fn tree(payload: &[u8]) -> Result<Value, ClaimsError> {
    serde_json::from_slice::<Strict>(payload).map(|Strict(v)| v).map_err(classify)
}

/// Names seen in one object: a short list, a set once the object is large (a payload is bounded by
/// `authz.max_token_bytes`, and only a verified payload is ever read).
#[derive(Default)]
struct SeenNames<'de> {
    few: Vec<Cow<'de, str>>,
    many: FastSet<Cow<'de, str>>,
}

impl<'de> SeenNames<'de> {
    /// False when `name` was already seen.
    fn insert(&mut self, name: Cow<'de, str>) -> bool {
        if !self.many.is_empty() {
            return self.many.insert(name);
        }
        if self.few.contains(&name) {
            return false;
        }
        self.few.push(name);
        if self.few.len() > 16 {
            self.many.extend(self.few.drain(..));
        }
        true
    }
}

fn duplicate<E: de::Error>() -> E {
    E::custom("duplicate member name")
}

/// A member name, borrowed from the payload unless it had escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}

/// Any JSON value, checked for repeated names and then forgotten.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut seen = SeenNames::default();
        while let Some(Name(name)) = map.next_key()? {
            if !seen.insert(name) {
                return Err(duplicate());
            }
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// The top-level object: its needed members kept as values, the rest only checked.
struct TopLevel<'a> {
    user_claim: &'a str,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Scanned;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Scanned, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Scanned;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    // Any other JSON value is well-formed but not a claims set; the caller says so.
    fn visit_bool<E>(self, _: bool) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_unit<E>(self) -> Result<Scanned, E> {
        Ok(Scanned::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scanned, A::Error> {
        CheckedVisitor.visit_seq(seq)?;
        Ok(Scanned::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scanned, A::Error> {
        let mut out = Scanned { is_object: true, ..Scanned::default() };
        let mut seen = SeenNames::default();
        while let Some(Name(name)) = map.next_key()? {
            let slot = match name.as_ref() {
                "exp" => Some(&mut out.exp),
                "nbf" => Some(&mut out.nbf),
                "iss" => Some(&mut out.iss),
                "aud" => Some(&mut out.aud),
                n if n == self.user_claim => Some(&mut out.user),
                _ => None,
            };
            match slot {
                Some(slot) => {
                    let Strict(value) = map.next_value()?;
                    *slot = Some(value);
                }
                None => {
                    map.next_value::<Checked>()?;
                }
            }
            if !seen.insert(name) {
                return Err(duplicate());
            }
        }
        // A user claim that is also a registered claim (say `iss`) was kept in that claim's slot.
        if out.user.is_none() {
            out.user = match self.user_claim {
                "exp" => out.exp.clone(),
                "nbf" => out.nbf.clone(),
                "iss" => out.iss.clone(),
                "aud" => out.aud.clone(),
                _ => None,
            };
        }
        Ok(out)
    }
}

/// A JSON value built as a tree, refusing a repeated name at any depth.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if members.insert(name, v).is_some() {
                return Err(duplicate());
            }
        }
        Ok(Value::Object(members))
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;

    #[pgrx::pg_test]
    fn scan_keeps_the_needed_claims_and_refuses_repeated_names_at_any_depth() {
        let s = scan(br#"{"sub":"ann","exp":17,"aud":["a","b"],"x":{"y":[{"z":1}]}}"#, "sub").unwrap();
        assert!(s.is_object);
        assert_eq!(s.user, Some(Value::from("ann")));
        assert_eq!(s.exp, Some(Value::from(17)));
        assert_eq!(s.aud, Some(serde_json::json!(["a", "b"])));
        assert!(s.iss.is_none() && s.nbf.is_none());
        for payload in [
            &br#"{"sub":"a","sub":"b"}"#[..],
            br#"{"exp":1,"sub":"a","exp":2}"#,
            br#"{"sub":"a","x":{"y":1,"y":2}}"#,
            br#"{"sub":"a","x":[{"y":1,"\u0079":2}]}"#,
            br#"{"email":"a","email":"b"}"#,
        ] {
            assert_eq!(scan(payload, "email").err(), Some(ClaimsError::DuplicateName), "{payload:?}");
            assert_eq!(tree(payload).err(), Some(ClaimsError::DuplicateName), "{payload:?}");
        }
        let many: String =
            format!("{{{}}}", (0..40).map(|i| format!("\"k{}\":{i}", i % 39)).collect::<Vec<_>>().join(","));
        assert_eq!(scan(many.as_bytes(), "sub").err(), Some(ClaimsError::DuplicateName));
        assert_eq!(scan(b"{\"sub\":\"a\"} x", "sub").err(), Some(ClaimsError::NotJson));
        assert_eq!(scan(b"{\"sub\":", "sub").err(), Some(ClaimsError::NotJson));
        assert!(!scan(b"[1,2]", "sub").unwrap().is_object);
        assert_eq!(scan(br#"{"iss":"idp"}"#, "iss").unwrap().user, Some(Value::from("idp")));
        assert_eq!(tree(br#"{"a":{"b":[1,"c"]}}"#).unwrap(), serde_json::json!({"a": {"b": [1, "c"]}}));
    }
}
