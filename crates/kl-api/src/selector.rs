//! Label and field selectors in Kubernetes' text syntax, as `kubectl -l` and `--field-selector`
//! write them and the apiserver's List and Watch take them.
//!
//! * [`LabelSelector`]: equality-based (`a=b`, `a==b`, `a!=b`) and set-based (`a in (x,y)`,
//!   `a notin (x)`, `a`, `!a`) requirements joined by commas; all must hold. Parsed like
//!   `k8s.io/apimachinery/pkg/labels.Parse`, with its error wording
//!   (`unable to parse requirement: ...`).
//! * [`FieldSelector`]: `field=value`, `field==value`, `field!=value` joined by commas; which
//!   fields exist is the caller's business (the apiserver knows each kind's), checked with
//!   [`FieldSelector::check_supported`] (`field label not supported: spec.bogus`).
//! * [`field_value`]: the value of a selectable field of an [`Object`].
//!
//! Pure parsing and matching: no I/O, no knowledge of storage.
use std::collections::BTreeMap;
use std::fmt;

use crate::Object;

/// A selector that could not be parsed, or names a field the kind does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    /// Whether a set of labels satisfies this requirement (Kubernetes' semantics: `!=` and
    /// `notin` also match objects without the label).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Equals(k, v) => write!(f, "{k}={v}"),
            Requirement::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Requirement::Exists(k) => write!(f, "{k}"),
            Requirement::DoesNotExist(k) => write!(f, "!{k}"),
        }
    }
}

/// A parsed label selector; the empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses Kubernetes' label selector syntax.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        LabelParser::new(text).parse()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => f.write_str(s),
            Token::Comma => f.write_str(","),
            Token::Open => f.write_str("("),
            Token::Close => f.write_str(")"),
            Token::Bang => f.write_str("!"),
            Token::Eq => f.write_str("="),
            Token::DoubleEq => f.write_str("=="),
            Token::NotEq => f.write_str("!="),
            Token::End => f.write_str(""),
        }
    }
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Token::Bang);
                i += 1;
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n\r,()!=".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    out.push(Token::End);
    out
}

struct LabelParser {
    tokens: Vec<Token>,
    pos: usize,
}

impl LabelParser {
    fn new(text: &str) -> Self {
        LabelParser {
            tokens: tokenize(text),
            pos: 0,
        }
    }

    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn err(found: &Token, expected: &str) -> SelectorError {
        SelectorError(format!(
            "unable to parse requirement: found '{found}', expected: {expected}"
        ))
    }

    fn parse(mut self) -> Result<LabelSelector, SelectorError> {
        let mut reqs = Vec::new();
        if *self.peek() == Token::End {
            return Ok(LabelSelector(reqs));
        }
        loop {
            reqs.push(self.requirement()?);
            match self.next() {
                Token::End => break,
                Token::Comma => {
                    if *self.peek() == Token::End {
                        return Err(Self::err(&Token::End, "identifier after ','"));
                    }
                }
                t => return Err(Self::err(&t, "',' or end of selector")),
            }
        }
        Ok(LabelSelector(reqs))
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Token::Ident(k) => {
                check_label_key(&k)?;
                Ok(k)
            }
            t => Err(Self::err(&t, "identifier")),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if *self.peek() == Token::Bang {
            self.next();
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek().clone() {
            Token::End | Token::Comma => Ok(Requirement::Exists(key)),
            Token::Eq | Token::DoubleEq => {
                self.next();
                Ok(Requirement::Equals(key, self.value()?))
            }
            Token::NotEq => {
                self.next();
                Ok(Requirement::NotEquals(key, self.value()?))
            }
            Token::Ident(op) if op == "in" || op == "notin" => {
                self.next();
                let values = self.set()?;
                Ok(if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            t => Err(Self::err(
                &t,
                "'=', '==', '!=', 'in', 'notin', ',' or end of selector",
            )),
        }
    }

    /// A value after `=`: empty is allowed (`a=` selects objects whose label a is "").
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek().clone() {
            Token::Ident(v) => {
                self.next();
                check_label_value(&v)?;
                Ok(v)
            }
            Token::End | Token::Comma => Ok(String::new()),
            t => Err(Self::err(&t, "identifier")),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            t => return Err(Self::err(&t, "'('")),
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Token::Ident(v) => {
                    check_label_value(&v)?;
                    values.push(v);
                    match self.next() {
                        Token::Comma => continue,
                        Token::Close => break,
                        t => return Err(Self::err(&t, "',' or ')'")),
                    }
                }
                // `in ()` and `in (a,)` are allowed upstream: an empty value.
                Token::Close => break,
                Token::Comma => values.push(String::new()),
                t => return Err(Self::err(&t, "')'")),
            }
        }
        Ok(values)
    }
}

fn check_label_key(k: &str) -> Result<(), SelectorError> {
    let errs = crate::validation::label_key_errors(k);
    match errs.first() {
        None => Ok(()),
        Some(e) => Err(SelectorError(format!(
            "unable to parse requirement: invalid label key \"{k}\": {e}"
        ))),
    }
}

fn check_label_value(v: &str) -> Result<(), SelectorError> {
    let errs = crate::validation::label_value_errors(v);
    match errs.first() {
        None => Ok(()),
        Some(e) => Err(SelectorError(format!(
            "unable to parse requirement: invalid label value: \"{v}\": {e}"
        ))),
    }
}

/// One requirement of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    pub value: String,
}

/// A parsed field selector; the empty selector selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `field=value`, `field==value` and `field!=value`, comma-separated. A backslash
    /// escapes `,`, `=`, `!` and `\` in values, as in Kubernetes.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_unescaped(text.trim()) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, negated, value) = if let Some((f, v)) = split_op(part, "!=") {
                (f, true, v)
            } else if let Some((f, v)) = split_op(part, "==") {
                (f, false, v)
            } else if let Some((f, v)) = split_op(part, "=") {
                (f, false, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(SelectorError(format!(
                    "invalid selector: '{part}': a field name is required"
                )));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value: unescape(value.trim()),
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Refuses a field outside `supported` with Kubernetes' words.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self
            .0
            .iter()
            .find(|r| !supported.contains(&r.field.as_str()))
        {
            Some(r) => Err(SelectorError(format!(
                "field label not supported: {}",
                r.field
            ))),
            None => Ok(()),
        }
    }

    /// Whether `obj` satisfies every requirement (an unknown field has the value "").
    pub fn matches(&self, obj: &Object) -> bool {
        self.0.iter().all(|r| {
            let v = field_value(obj, &r.field).unwrap_or_default();
            (v == r.value) != r.negated
        })
    }
}

fn split_op<'a>(part: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if part[i..].starts_with(op) {
            return Some((&part[..i], &part[i + op.len()..]));
        }
        i += 1;
    }
    None
}

fn split_unescaped(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => {
                out.push(&text[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    if start <= text.len() {
        out.push(&text[start.min(text.len())..]);
    }
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The fields a kind can be selected on, as the apiserver supports them (upstream's
/// `GetAttrs`/field label conversions, reduced to what kube-lite's types carry).
pub fn supported_fields(kind: crate::Kind) -> &'static [&'static str] {
    use crate::Kind;
    match kind {
        Kind::Pod => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "status.phase",
            "status.podIP",
        ],
        Kind::Node => &["metadata.name", "spec.unschedulable"],
        Kind::Namespace => &["metadata.name", "status.phase"],
        Kind::Event => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The value of a selectable field of `obj`, or None when the kind has no such field.
pub fn field_value(obj: &Object, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(obj.name().to_string()),
        "metadata.namespace" => return Some(obj.namespace().to_string()),
        _ => {}
    }
    match obj {
        Object::Pod(p) => {
            let spec = p.spec.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            match field {
                "spec.nodeName" => Some(spec.node_name),
                "spec.restartPolicy" => Some(spec.restart_policy),
                "status.phase" => Some(status.phase),
                "status.podIP" => Some(status.pod_ip),
                _ => None,
            }
        }
        Object::Node(n) => match field {
            "spec.unschedulable" => {
                Some(n.spec.as_ref().is_some_and(|s| s.unschedulable).to_string())
            }
            _ => None,
        },
        Object::Namespace(n) => match field {
            "status.phase" => Some(n.status.clone().unwrap_or_default().phase),
            _ => None,
        },
        Object::Event(e) => {
            let io = e.involved_object.clone().unwrap_or_default();
            match field {
                "involvedObject.kind" => Some(io.kind),
                "involvedObject.namespace" => Some(io.namespace),
                "involvedObject.name" => Some(io.name),
                "involvedObject.uid" => Some(io.uid),
                "reason" => Some(e.reason.clone()),
                "type" => Some(e.r#type.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Pod, PodSpec, PodStatus, Resource};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_every_form() {
        use Requirement::*;
        assert_eq!(sel(""), LabelSelector(vec![]));
        assert_eq!(
            sel("a=b, c==d,e!=f"),
            LabelSelector(vec![
                Equals("a".into(), "b".into()),
                Equals("c".into(), "d".into()),
                NotEquals("e".into(), "f".into())
            ])
        );
        assert_eq!(
            sel("env in (prod, dev),tier notin (db),app,!legacy"),
            LabelSelector(vec![
                In("env".into(), vec!["prod".into(), "dev".into()]),
                NotIn("tier".into(), vec!["db".into()]),
                Exists("app".into()),
                DoesNotExist("legacy".into())
            ])
        );
        assert_eq!(
            sel("app.kubernetes.io/name=web"),
            LabelSelector(vec![Equals("app.kubernetes.io/name".into(), "web".into())])
        );
        assert_eq!(
            sel("a="),
            LabelSelector(vec![Equals("a".into(), String::new())])
        );
        assert_eq!(sel("a in (x,y)").to_string(), "a in (x,y)");
    }

    #[test]
    fn refuses_malformed_selectors() {
        for bad in [
            "a in (x",
            "a in x",
            "=b",
            "a b",
            "a,",
            "a=b=c",
            "!",
            "a==(x)",
            "bad key=x",
            "a=b c",
            "-a=b",
            "a=-b-",
        ] {
            let e = LabelSelector::parse(bad);
            assert!(e.is_err(), "{bad:?} parsed as {e:?}");
            assert!(
                e.unwrap_err().0.starts_with("unable to parse requirement"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn matches_like_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases = [
            ("app=web", [true, false, false]),
            ("app!=web", [false, true, true]),
            ("app in (web,db)", [true, true, false]),
            ("app notin (web)", [false, true, true]),
            ("tier", [true, false, false]),
            ("!tier", [false, true, true]),
            ("app,!tier", [false, true, false]),
            ("", [true, true, true]),
        ];
        for (s, want) in cases {
            let s2 = sel(s);
            let got = [s2.matches(&web), s2.matches(&db), s2.matches(&none)];
            assert_eq!(got, want, "{s}");
        }
    }

    fn pod(name: &str, node: &str, phase: &str) -> Object {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.meta_mut().name = name.into();
        p.meta_mut().namespace = "default".into();
        p.into_object()
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Running").unwrap();
        assert_eq!(f.0.len(), 2);
        assert!(f.matches(&pod("a", "n1", "Pending")));
        assert!(!f.matches(&pod("a", "n1", "Running")));
        assert!(!f.matches(&pod("a", "n2", "Pending")));
        let f = FieldSelector::parse("spec.nodeName==").unwrap();
        assert!(f.matches(&pod("a", "", "Pending")));
        assert!(!f.matches(&pod("a", "n1", "Pending")));
        let f = FieldSelector::parse("metadata.name=a\\,b").unwrap();
        assert_eq!(f.0[0].value, "a,b");
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse("=x").is_err());
        let f = FieldSelector::parse("spec.bogus=1").unwrap();
        assert_eq!(
            f.check_supported(supported_fields(crate::Kind::Pod))
                .unwrap_err()
                .0,
            "field label not supported: spec.bogus"
        );
        assert!(FieldSelector::parse("metadata.namespace=default")
            .unwrap()
            .check_supported(supported_fields(crate::Kind::Lease))
            .is_ok());
    }
}
