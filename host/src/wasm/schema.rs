//! A plugin's declared parameters: name, type, default and one line of doc, carried in the
//! plugin itself as a custom section named [`SECTION`] holding JSON, so that it is read
//! from the bytes without compiling or instantiating anything.
//!
//! `repx plugin build` writes the section from the plugin's `plugin.toml`, the same file
//! for every language (componentize-py and componentize-js have no way to emit a custom
//! section from the source). The host reads it before any job runs: a stage that passes a
//! parameter its plugin does not declare, or a value of another type, is an invalid lab
//! (see `plan.rs`).
//!
//! Invariants: a plugin without the section declares nothing and takes any parameter (so
//! plugins built before schemas keep working); the section is read at the top level of the
//! component or module only, the first one counts; a section is accepted only if it is
//! small, well-formed, and names each parameter once with a valid name, its default of its
//! type. Its text is the plugin's: printers escape the doc lines, and names are limited to
//! `[A-Za-z0-9_.-]`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmparser::{Chunk, Parser, Payload};

/// The custom section's name.
pub const SECTION: &str = "repx:params";

/// A section larger than this is refused: a schema is a few hundred bytes.
const MAX_SECTION: usize = 64 << 10;

/// The type of a parameter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    Int,
    /// Any number: an integer is a float too.
    Float,
    Bool,
    String,
    List,
    /// Anything: the plugin checks it itself.
    Any,
}

impl Type {
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            Type::Int => value.is_i64() || value.is_u64(),
            Type::Float => value.is_number(),
            Type::Bool => value.is_boolean(),
            Type::String => value.is_string(),
            Type::List => value.is_array(),
            Type::Any => true,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Type::Int => "int",
            Type::Float => "float",
            Type::Bool => "bool",
            Type::String => "string",
            Type::List => "list",
            Type::Any => "any",
        }
    }

    /// What a value is, in the words of the types: `"ten"` is a string.
    pub fn of(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_f64() => "float",
            Value::Number(_) => "int",
            Value::String(_) => "string",
            Value::Array(_) => "list",
            Value::Object(_) => "table",
        }
    }
}

/// `an int`, `a string`.
pub fn a(word: &str) -> String {
    let article = if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {word}")
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
    /// What the plugin uses when the stage does not pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc: String,
}

impl Param {
    /// `n (int, default 10)`.
    pub fn signature(&self) -> String {
        match &self.default {
            Some(default) => format!("{} ({}, default {default})", self.name, self.ty),
            None => format!("{} ({})", self.name, self.ty),
        }
    }
}

/// Everything a plugin declares, in the order it declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub params: Vec<Param>,
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("malformed WebAssembly: {0}")]
    Wasm(#[from] wasmparser::BinaryReaderError),
    #[error("its `{SECTION}` section is {0} bytes, more than the {MAX_SECTION} a schema may have")]
    TooLarge(usize),
    #[error("its `{SECTION}` section is not a parameter schema: {0}")]
    Malformed(String),
}

impl Schema {
    /// The schema a plugin carries, or `None` when it declares nothing.
    pub fn read(bytes: &[u8]) -> Result<Option<Schema>, SchemaError> {
        let Some(payload) = top_level_section(bytes)? else {
            return Ok(None);
        };
        if payload.len() > MAX_SECTION {
            return Err(SchemaError::TooLarge(payload.len()));
        }
        let schema: Schema =
            serde_json::from_slice(payload).map_err(|e| SchemaError::Malformed(e.to_string()))?;
        schema.validate().map_err(SchemaError::Malformed)?;
        Ok(Some(schema))
    }

    /// Each name valid and once, each default of its type.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for param in &self.params {
            let valid = !param.name.is_empty()
                && param.name.len() <= 64
                && param
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(format!(
                    "{:?} is not a parameter name: use letters, digits, `-`, `_` and `.`",
                    param.name
                ));
            }
            if !seen.insert(param.name.as_str()) {
                return Err(format!("`{}` is declared twice", param.name));
            }
            if param.doc.len() > 200 || param.doc.chars().any(char::is_control) {
                return Err(format!(
                    "the doc of `{}` is not one line of at most 200 bytes",
                    param.name
                ));
            }
            if let Some(default) = &param.default
                && !param.ty.accepts(default)
            {
                return Err(format!(
                    "the default of `{}` is {}, not {}",
                    param.name,
                    a(Type::of(default)),
                    a(param.ty.as_str())
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// `n (int, default 10), label (string)`, or `nothing`.
    pub fn signatures(&self) -> String {
        if self.params.is_empty() {
            return "no parameters".to_string();
        }
        self.params
            .iter()
            .map(Param::signature)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `wasm` with the schema appended as a custom section [`SECTION`]; a component or a
    /// core module may end with a custom section, and the host reads the first.
    pub fn append_to(&self, wasm: &mut Vec<u8>) {
        let payload = serde_json::to_vec(self).expect("a schema is JSON");
        let mut body = Vec::new();
        leb128(&mut body, SECTION.len());
        body.extend_from_slice(SECTION.as_bytes());
        body.extend_from_slice(&payload);
        wasm.push(0); // the custom section's id
        leb128(wasm, body.len());
        wasm.extend_from_slice(&body);
    }
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The payload of the first top-level custom section named [`SECTION`]. Nested modules
/// and components and the code section are skipped whole: this reads section headers,
/// not the megabytes of an interpreter's component.
fn top_level_section(bytes: &[u8]) -> Result<Option<&[u8]>, wasmparser::BinaryReaderError> {
    let mut parser = Parser::new(0);
    let mut pos = 0usize;
    loop {
        if pos > bytes.len() {
            return Ok(None);
        }
        let Chunk::Parsed { consumed, payload } = parser.parse(&bytes[pos..], true)? else {
            // With `eof` set the parser errors instead of asking for more.
            return Ok(None);
        };
        pos += consumed;
        match payload {
            Payload::CustomSection(reader) if reader.name() == SECTION => {
                return Ok(Some(reader.data()));
            }
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                pos = pos.saturating_add((unchecked_range.end - unchecked_range.start) as usize);
            }
            Payload::CodeSectionStart { size, .. } => {
                parser.skip_section();
                pos = pos.saturating_add(size as usize);
            }
            Payload::End(_) => return Ok(None),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The smallest core module and component: their headers.
    const MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn schema() -> Schema {
        serde_json::from_value(json!({ "params": [
            { "name": "n", "type": "int", "default": 10, "doc": "how many" },
            { "name": "label", "type": "string" },
        ]}))
        .unwrap()
    }

    #[test]
    fn a_schema_appended_is_read_back_from_a_module_and_a_component() {
        for header in [MODULE, COMPONENT] {
            let mut wasm = header.to_vec();
            schema().append_to(&mut wasm);
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                .validate_all(&wasm)
                .expect("still valid");
            assert_eq!(Schema::read(&wasm).unwrap(), Some(schema()));
            assert_eq!(Schema::read(header).unwrap(), None, "declares nothing");
        }
    }

    #[test]
    fn a_section_inside_a_nested_module_is_not_the_plugins() {
        let mut inner = MODULE.to_vec();
        schema().append_to(&mut inner);
        let mut wasm = COMPONENT.to_vec();
        wasm.push(1); // a component's core module section
        leb128(&mut wasm, inner.len());
        wasm.extend_from_slice(&inner);
        assert_eq!(Schema::read(&wasm).unwrap(), None);
    }

    #[test]
    fn values_are_checked_against_the_declared_type() {
        assert!(Type::Int.accepts(&json!(3)));
        assert!(!Type::Int.accepts(&json!(3.5)));
        assert!(!Type::Int.accepts(&json!("3")));
        assert!(Type::Float.accepts(&json!(3)));
        assert!(Type::String.accepts(&json!("x")));
        assert!(!Type::Bool.accepts(&json!(0)));
        assert!(Type::List.accepts(&json!([1])));
        assert!(Type::Any.accepts(&json!({ "a": 1 })));
        assert_eq!(Type::of(&json!(3.5)), "float");
        assert_eq!(schema().signatures(), "n (int, default 10), label (string)");
    }

    #[test]
    fn a_hostile_section_is_refused() {
        let section = |payload: &[u8]| {
            let mut body = Vec::new();
            leb128(&mut body, SECTION.len());
            body.extend_from_slice(SECTION.as_bytes());
            body.extend_from_slice(payload);
            let mut wasm = MODULE.to_vec();
            wasm.push(0);
            leb128(&mut wasm, body.len());
            wasm.extend_from_slice(&body);
            Schema::read(&wasm)
        };
        for (payload, expected) in [
            (&b"not json"[..], "not a parameter schema"),
            (
                br#"{"params":[{"name":"a\u001b[31m","type":"int"}]}"#,
                "not a parameter name",
            ),
            (
                br#"{"params":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}"#,
                "declared twice",
            ),
            (
                br#"{"params":[{"name":"a","type":"int","default":"x"}]}"#,
                "the default of `a` is a string, not an int",
            ),
            (
                br#"{"params":[{"name":"a","type":"date"}]}"#,
                "unknown variant",
            ),
        ] {
            let err = section(payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let big = format!(r#"{{"params":[],"x":"{}"}}"#, "a".repeat(MAX_SECTION));
        assert!(matches!(
            section(big.as_bytes()),
            Err(SchemaError::TooLarge(_))
        ));
    }
}
