//! Label matchers in Alertmanager's syntax: `name=value`, `name!=value`,
//! `name=~regex`, `name!~regex`; values may be double-quoted. Regexes are
//! anchored (`^(?:…)$`) as in Alertmanager. Pure.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    NotEq,
    Re,
    NotRe,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::NotEq => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        }
    }
}

/// One label matcher. A missing label matches as the empty string, as in
/// Alertmanager (so `team!=ops` matches alerts without a `team` label).
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    regex: Option<Regex>,
}

pub use crate::error::AlerterError as MatcherError;

fn bad(text: String, reason: impl Into<String>) -> MatcherError {
    MatcherError::BadMatcher {
        text,
        reason: reason.into(),
    }
}

impl Matcher {
    /// Builds a matcher, compiling the regex of `=~` / `!~`.
    pub fn new(name: &str, op: Op, value: &str) -> Result<Self, MatcherError> {
        let text = format!("{name}{}{value:?}", op.text());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad(text, "label name must be non-empty [A-Za-z0-9_]"));
        }
        let regex = match op {
            Op::Re | Op::NotRe => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| bad(text.clone(), e.to_string()))?)
            }
            Op::Eq | Op::NotEq => None,
        };
        Ok(Self {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Parses `name<op>value`, e.g. `severity=~"critical|high"`.
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let bad = |reason: &str| bad(text.to_string(), reason);
        let t = text.trim();
        let pos = t.find(['=', '!']).ok_or_else(|| bad("expected one of =, !=, =~, !~"))?;
        let (name, rest) = t.split_at(pos);
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (Op::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (Op::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (Op::NotEq, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (Op::Eq, v)
        } else {
            return Err(bad("expected one of =, !=, =~, !~"));
        };
        let value = value.trim();
        let value = if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            value[1..value.len() - 1].replace("\\\"", "\"")
        } else if value.starts_with('"') {
            return Err(bad("unterminated quote"));
        } else {
            value.to_string()
        };
        Self::new(name.trim(), op, &value).map_err(|e| match e {
            MatcherError::BadMatcher { reason, .. } => bad(&reason),
            other => other,
        })
    }

    /// Whether `labels` satisfy this matcher.
    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.regex) {
            (Op::Eq, _) => v == self.value,
            (Op::NotEq, _) => v != self.value,
            (Op::Re, Some(r)) => r.is_match(v),
            (Op::NotRe, Some(r)) => !r.is_match(v),
            (Op::Re | Op::NotRe, None) => false,
        }
    }
}

/// Whether every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses a list of matcher texts, naming the first bad one.
pub fn parse_all(texts: &[String]) -> Result<Vec<Matcher>, MatcherError> {
    texts.iter().map(|t| Matcher::parse(t)).collect()
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.text(), self.value)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Matcher::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_the_four_operators() {
        let l = labels(&[("severity", "critical"), ("model", "fraud")]);
        assert!(Matcher::parse("severity=critical").unwrap().matches(&l));
        assert!(Matcher::parse(r#"severity="critical""#).unwrap().matches(&l));
        assert!(Matcher::parse("model!=churn").unwrap().matches(&l));
        assert!(Matcher::parse(r#"severity=~"critical|high""#).unwrap().matches(&l));
        assert!(!Matcher::parse(r#"severity!~"crit.*""#).unwrap().matches(&l));
        // Anchored: a partial match is no match.
        assert!(!Matcher::parse("severity=~crit").unwrap().matches(&l));
        // Missing label matches as empty.
        assert!(Matcher::parse("team!=ops").unwrap().matches(&l));
        assert!(Matcher::parse(r#"team="""#).unwrap().matches(&l));
    }

    #[test]
    fn rejects_bad_text_naming_it() {
        for bad in ["severity", "=x", "sev erity=x", "x=~(", r#"x="open"#] {
            let e = Matcher::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("bad matcher {bad:?}")), "{e}");
        }
    }

    #[test]
    fn round_trips_through_display() {
        let m = Matcher::parse(r#"severity=~"critical|high""#).unwrap();
        let again = Matcher::parse(&m.to_string()).unwrap();
        assert_eq!(again.to_string(), m.to_string());
    }
}
