//! A lab as JSON (what a `lab.nix` evaluates to, or a `lab.json`) turned into the TOML
//! document that [`super::parse`] validates, so that every lab, whatever it is written
//! in, goes through one set of checks.
//!
//! The document has one key or table header per line, and remembers each line's dotted
//! key: a problem the parser reports by line (a value of the wrong type) is then named by
//! its key, since the lines of a generated document mean nothing to the user.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::Problem;

/// What a JSON parser accepts but a lab must not say, found in `text` (valid JSON): a key
/// given twice in one object (a parser keeps the last, silently) and an integer that no
/// 64-bit signed integer holds, as TOML's (a parser makes it a float, silently). Each problem has the line
/// and the dotted key.
pub(super) fn strict(text: &str) -> Vec<Problem> {
    enum Frame {
        Object {
            key: Option<String>,
            seen: BTreeSet<String>,
        },
        Array,
    }
    let path = |stack: &[Frame]| {
        stack
            .iter()
            .filter_map(|f| match f {
                Frame::Object { key, .. } => key.clone(),
                Frame::Array => None,
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut problems = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut line = 1;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '\n' => line += 1,
            '{' => stack.push(Frame::Object {
                key: None,
                seen: BTreeSet::new(),
            }),
            '[' => stack.push(Frame::Array),
            '}' | ']' => _ = stack.pop(),
            '"' => {
                let mut raw = String::from('"');
                while let Some((_, c)) = chars.next() {
                    raw.push(c);
                    match c {
                        '\\' => raw.extend(chars.next().map(|(_, c)| c)),
                        '"' => break,
                        _ => {}
                    }
                }
                // A string followed by `:` is a key.
                while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                    if chars.next().is_some_and(|(_, c)| c == '\n') {
                        line += 1;
                    }
                }
                if chars.peek().is_none_or(|(_, c)| *c != ':') {
                    continue;
                }
                let name: String = serde_json::from_str(&raw).unwrap_or(raw);
                if let Some(Frame::Object { key, seen }) = stack.last_mut() {
                    *key = Some(name.clone());
                    if !seen.insert(name) {
                        problems.push(Problem {
                            line: Some(line),
                            key: path(&stack),
                            message: "is given twice in one object: keep one".into(),
                        });
                    }
                }
            }
            '-' | '0'..='9' => {
                let mut end = start + c.len_utf8();
                while let Some((i, c)) = chars.peek().copied() {
                    if !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let number = &text[start..end];
                let integer = !number.contains(['.', 'e', 'E']);
                if integer && number.parse::<i64>().is_err() {
                    problems.push(Problem {
                        line: Some(line),
                        key: path(&stack),
                        message: format!(
                            "{number} is out of range: an integer of a lab is at most \
                             {} and at least {}",
                            i64::MAX,
                            i64::MIN
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    problems
}

/// The TOML text and the dotted key each of its lines stands for.
pub(super) struct Document {
    pub text: String,
    keys: Vec<String>,
}

impl Document {
    /// `problem` as the user should read it: named by its key, without a line number.
    pub fn locate(&self, mut problem: Problem) -> Problem {
        if let Some(line) = problem.line.take()
            && problem.key.is_empty()
            && let Some(key) = line.checked_sub(1).and_then(|i| self.keys.get(i))
        {
            problem.key = key.clone();
        }
        problem
    }

    fn line(&mut self, text: String, key: &[&str]) {
        self.text.push_str(&text);
        self.text.push('\n');
        self.keys.push(key.join("."));
    }
}

/// The TOML document for `lab`, or what in it TOML cannot say (null, a top level that is
/// not an object, integers beyond 64 bits).
pub(super) fn to_toml(lab: &Value) -> Result<Document, Vec<Problem>> {
    let Value::Object(map) = lab else {
        return Err(vec![Problem {
            line: None,
            key: String::new(),
            message: format!(
                "a lab is an object of `lab`, `stages`, `pipelines`, `runs` and `slurm` (what repx.mkLab returns), not {}",
                kind(lab)
            ),
        }]);
    };
    let mut doc = Document {
        text: String::new(),
        keys: Vec::new(),
    };
    let mut problems = Vec::new();
    table(&mut Vec::new(), map, &mut doc, &mut problems);
    if problems.is_empty() {
        Ok(doc)
    } else {
        Err(problems)
    }
}

fn table<'a>(
    path: &mut Vec<&'a str>,
    map: &'a Map<String, Value>,
    doc: &mut Document,
    problems: &mut Vec<Problem>,
) {
    // Plain values first: after a `[header]`, every `key = value` belongs to that table.
    for (name, value) in map.iter().filter(|(_, v)| !v.is_object()) {
        path.push(name);
        let mut text = String::new();
        match inline(value, path, &mut text) {
            Ok(()) => doc.line(format!("{} = {text}", key(name)), path),
            Err(problem) => problems.push(problem),
        }
        path.pop();
    }
    for (name, value) in map {
        if let Value::Object(inner) = value {
            path.push(name);
            let header: Vec<String> = path.iter().map(|p| key(p)).collect();
            doc.line(format!("[{}]", header.join(".")), path);
            table(path, inner, doc, problems);
            path.pop();
        }
    }
}

/// `value` as a one-line TOML value.
fn inline(value: &Value, path: &[&str], out: &mut String) -> Result<(), Problem> {
    let problem = |message: String| Problem {
        line: None,
        key: path.join("."),
        message,
    };
    match value {
        Value::Null => {
            return Err(problem(
                "is null, which a lab cannot hold: leave the key out instead".into(),
            ));
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if n.is_u64() {
                return Err(problem(format!(
                    "{n} is larger than a 64-bit integer can hold"
                )));
            } else {
                // JSON has no NaN or infinity; `{:?}` keeps a `.0` or an exponent, so the
                // number stays a float.
                out.push_str(&format!("{:?}", n.as_f64().unwrap_or_default()));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                inline(item, path, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (name, item)) in map.iter().enumerate() {
                out.push_str(if i > 0 { ", " } else { " " });
                out.push_str(&key(name));
                out.push_str(" = ");
                let mut inner = path.to_vec();
                inner.push(name);
                inline(item, &inner, out)?;
            }
            out.push_str(if map.is_empty() { "}" } else { " }" });
        }
    }
    Ok(())
}

/// A TOML key: bare when it may be, else quoted.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        name.to_string()
    } else {
        let mut out = String::new();
        string(name, &mut out);
        out
    }
}

/// A TOML basic string on one line.
fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Document {
        to_toml(&serde_json::from_str(json).unwrap()).unwrap_or_else(|p| panic!("{p:?}"))
    }

    #[test]
    fn values_come_before_tables_one_per_line() {
        let d = doc(
            r#"{"lab": {"name": "x"}, "stages": {"a.b": {"plugin": "p\"q\n", "params": {"f": 1.0, "i": 2, "l": [1, {"k": true}]}}}}"#,
        );
        assert_eq!(
            d.text,
            "[lab]\nname = \"x\"\n[stages]\n[stages.\"a.b\"]\nplugin = \"p\\\"q\\n\"\n\
             [stages.\"a.b\".params]\nf = 1.0\ni = 2\nl = [1, { k = true }]\n"
        );
        assert_eq!(d.keys[4], "stages.a.b.plugin");
        let parsed: toml::Value = toml::from_str(&d.text).unwrap();
        assert_eq!(parsed["stages"]["a.b"]["plugin"].as_str(), Some("p\"q\n"));
        assert_eq!(parsed["stages"]["a.b"]["params"]["f"].as_float(), Some(1.0));
    }

    #[test]
    fn a_line_problem_is_named_by_its_key() {
        let d = doc(r#"{"stages": {"s": {"outputs": "x"}}}"#);
        let located = d.locate(Problem {
            line: Some(3),
            key: String::new(),
            message: "invalid type".into(),
        });
        assert_eq!(
            (located.line, located.key.as_str()),
            (None, "stages.s.outputs")
        );
    }

    #[test]
    fn duplicate_keys_and_integers_out_of_range_are_named_by_line_and_key() {
        let text = "{\"stages\": {\"s\": {\n  \"mode\": \"pure\",\n  \"mode\": \"impure\",\n  \
                    \"params\": {\"n\": 18446744073709551616, \"l\": [1, -9223372036854775809],\n  \
                    \"f\": 1.5e300, \"k\": \"a\\\"b:\", \"m\": \"mode\"}}}}";
        let problems = strict(text);
        let found: Vec<(Option<usize>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(3), "stages.s.mode"),
                (Some(4), "stages.s.params.n"),
                (Some(4), "stages.s.params.l")
            ],
            "{problems:?}"
        );
        assert!(
            problems[1]
                .message
                .contains("18446744073709551616 is out of range")
        );
        // What is within range, in an array or not, is fine.
        assert!(
            strict("{\"a\": [9223372036854775807, -9223372036854775808, 0.5], \"b\": {\"a\": 1}}")
                .is_empty()
        );
    }

    #[test]
    fn what_toml_cannot_hold_is_refused_by_key() {
        let problems = to_toml(&serde_json::json!({"runs": {"r": {"params": {"x": null}}}}))
            .err()
            .unwrap();
        assert_eq!(problems[0].key, "runs.r.params.x");
        assert!(to_toml(&serde_json::json!([1])).is_err());
    }
}
