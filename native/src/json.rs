//! A strict JSON reader and the canonical writer of EVENTS.md §5.
//!
//! The reader accepts RFC 8259 JSON in UTF-8 and refuses, as the Python
//! reference does (orjson, then the schema), everything an event may not hold:
//! invalid UTF-8, lone surrogates (in `\u` escapes), a duplicate key in any
//! object, nesting deeper than `DEPTH_MAX`, `NaN`/`Infinity`, trailing bytes.
//! Numbers are kept as text with their exact integer value when they are
//! integers (no fraction, no exponent; `-0` is the integer 0): the schema
//! refuses every other number, so nothing here needs a float.
//!
//! Why not serde_json: it keeps the last of two duplicate keys silently, needs a
//! feature to keep number text, and its depth limit (128) is not ours. This
//! reader is small, recursive only up to `DEPTH_MAX` levels (checked before
//! descending), and allocates what the event holds, nothing more.
//!
//! The writer gives the canonical bytes: keys sorted in code point order
//! (UTF-8 byte order is code point order), no whitespace, `,` and `:`
//! separators, non-ASCII unescaped, and exactly the escapes of Python's
//! `json.dumps(ensure_ascii=False)` and orjson: `\"`, `\\`, `\b`, `\t`, `\n`,
//! `\f`, `\r`, other C0 controls as `\u00xx`.

/// The deepest nesting of arrays and objects an offered item may have
/// (`ledger.contract.schema.JSON_DEPTH_MAX`): an event needs 3.
pub const DEPTH_MAX: usize = 32;
/// Objects up to this many pairs are checked for duplicate keys pair by pair;
/// larger ones are sorted once.
const SMALL_OBJECT: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number: its integer value when it is a JSON integer that fits an i128
    /// (`None` for fractions, exponents and integers beyond that).
    Number(Option<i128>),
    String(String),
    Array(Vec<Value>),
    /// Pairs in input order; keys are distinct (a duplicate is a parse error).
    Object(Vec<(String, Value)>),
}

impl Value {
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a payload is not JSON an event can be (the reference gives the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    Syntax(usize),
    TooDeep,
    DuplicateKey,
}

/// Parse one JSON text (surrounding JSON whitespace allowed).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    // The reference reads UTF-8 only: refuse anything else before any work.
    if std::str::from_utf8(bytes).is_err() {
        return Err(JsonError::Syntax(0));
    }
    let mut p = Parser { b: bytes, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != bytes.len() {
        return Err(JsonError::Syntax(p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if c == b' ' || c == b'\t' || c == b'\n' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn err<T>(&self) -> Result<T, JsonError> {
        Err(JsonError::Syntax(self.i))
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err()
        }
    }

    /// `depth`: arrays and objects enclosing this value.
    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.b.get(self.i) {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => self.number(),
            _ => self.err(),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > DEPTH_MAX {
            return Err(JsonError::TooDeep);
        }
        self.i += 1;
        let mut pairs: Vec<(String, Value)> = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Value::Object(pairs));
        }
        loop {
            self.ws();
            if self.b.get(self.i) != Some(&b'"') {
                return self.err();
            }
            let key = self.string()?;
            self.ws();
            if self.b.get(self.i) != Some(&b':') {
                return self.err();
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth)?;
            // Small objects (every envelope and data object) are checked as they
            // grow; larger ones (authors, components, uses) once, sorted, below.
            if pairs.len() < SMALL_OBJECT && pairs.iter().any(|(k, _)| *k == key) {
                return Err(JsonError::DuplicateKey);
            }
            pairs.push((key, v));
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return self.err(),
            }
        }
        if pairs.len() > SMALL_OBJECT {
            let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(JsonError::DuplicateKey);
            }
        }
        Ok(Value::Object(pairs))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > DEPTH_MAX {
            return Err(JsonError::TooDeep);
        }
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    break;
                }
                _ => return self.err(),
            }
        }
        Ok(Value::Array(items))
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let negative = self.b[self.i] == b'-';
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(c) if c.is_ascii_digit() => {
                while matches!(self.b.get(self.i), Some(c) if c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return self.err(),
        }
        let int_end = self.i;
        let mut integral = true;
        if self.b.get(self.i) == Some(&b'.') {
            integral = false;
            self.i += 1;
            if !matches!(self.b.get(self.i), Some(c) if c.is_ascii_digit()) {
                return self.err();
            }
            while matches!(self.b.get(self.i), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.b.get(self.i), Some(b'e') | Some(b'E')) {
            integral = false;
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+') | Some(b'-')) {
                self.i += 1;
            }
            if !matches!(self.b.get(self.i), Some(c) if c.is_ascii_digit()) {
                return self.err();
            }
            while matches!(self.b.get(self.i), Some(c) if c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if !integral || int_end - int_start > 38 {
            return Ok(Value::Number(None));
        }
        let mut n: i128 = 0;
        for &c in &self.b[int_start..int_end] {
            n = n * 10 + i128::from(c - b'0');
        }
        Ok(Value::Number(Some(if negative { -n } else { n })))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self.b.get(self.i..self.i + 4).ok_or(JsonError::Syntax(self.i))?;
        let mut n = 0u32;
        for &c in digits {
            let d = (c as char).to_digit(16).ok_or(JsonError::Syntax(self.i))?;
            n = n * 16 + d;
        }
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let run_start = self.i;
            while let Some(&c) = self.b.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // The whole text is valid UTF-8 and the run stops only at ASCII bytes.
            out.push_str(std::str::from_utf8(&self.b[run_start..self.i]).map_err(|_| JsonError::Syntax(run_start))?);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.b.get(self.i).ok_or(JsonError::Syntax(self.i))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first) {
                                // A high surrogate must be followed by a low one.
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return self.err();
                                }
                                self.i += 2;
                                let second = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&second) {
                                    return self.err();
                                }
                                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&first) {
                                return self.err(); // a lone low surrogate
                            } else {
                                first
                            };
                            out.push(char::from_u32(code).ok_or(JsonError::Syntax(self.i))?);
                        }
                        _ => return self.err(),
                    }
                }
                _ => return self.err(), // end of text, or a raw control character
            }
        }
    }
}

/// Append the canonical bytes of `v` (EVENTS.md §5) to `out`.
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(Some(n)) => out.extend_from_slice(n.to_string().as_bytes()),
        // The schema never accepts a number without an integer value.
        Value::Number(None) => unreachable!("no canonical form for a non-integer number"),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(pairs) => {
            let mut sorted: Vec<&(String, Value)> = pairs.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string as the canonical form spells it.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]]),
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        let mut out = Vec::new();
        write_canonical(&parse(text.as_bytes()).unwrap(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn canonical_sorts_keys_and_drops_whitespace() {
        assert_eq!(canonical(r#" {"b": [1, -0, {"z":null,"a":true}], "a": "x\u00e9\n"} "#),
                   "{\"a\":\"xé\\n\",\"b\":[1,0,{\"a\":true,\"z\":null}]}");
    }

    #[test]
    fn controls_are_escaped_as_python_does() {
        assert_eq!(canonical("\"\\u001f\\u0008\\u007f\""), "\"\\u001f\\b\u{7f}\"");
    }

    #[test]
    fn duplicate_keys_depth_and_surrogates_are_refused() {
        assert_eq!(parse(br#"{"a":1,"a":2}"#), Err(JsonError::DuplicateKey));
        assert_eq!(parse(br#"{"x":{"a":1,"a":1}}"#), Err(JsonError::DuplicateKey));
        let deep = "[".repeat(33) + &"]".repeat(33);
        assert_eq!(parse(deep.as_bytes()), Err(JsonError::TooDeep));
        let ok = "[".repeat(32) + &"]".repeat(32);
        assert!(parse(ok.as_bytes()).is_ok());
        assert!(parse(br#""\ud800""#).is_err());
        assert!(parse(br#""\udc00""#).is_err());
        assert_eq!(parse(br#""\ud83d\ude00""#), Ok(Value::String("😀".into())));
        assert!(parse(b"\"\xff\"").is_err());
        assert!(parse(b"NaN").is_err());
        assert!(parse(b"{} x").is_err());
    }

    #[test]
    fn numbers_keep_integers_only() {
        assert_eq!(parse(b"9223372036854775807"), Ok(Value::Number(Some(9223372036854775807))));
        assert_eq!(parse(b"1.0"), Ok(Value::Number(None)));
        assert_eq!(parse(b"1e2"), Ok(Value::Number(None)));
        assert!(parse(b"01").is_err());
        assert!(parse(b"-").is_err());
    }
}
