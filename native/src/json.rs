//! A strict JSON reader and the canonical writer of EVENTS.md §5.
//!
//! OWNER: helper R1 (schema). Contract:
//! - `parse(bytes) -> Result<Value, JsonError>`: RFC 8259 JSON, UTF-8 only (invalid UTF-8
//!   and lone surrogate escapes are errors, as orjson refuses them), objects keep their
//!   pairs in input order and a DUPLICATE KEY is an error, nesting deeper than
//!   `DEPTH_MAX` (32) is an error found before any recursion (iterative parser or a
//!   pre-scan), numbers are kept as their raw text plus an exact integer reading when
//!   they are integers (no fraction, no exponent; "-0" is the integer 0).
//! - `write_canonical(&Value, &mut Vec<u8>)`: keys sorted by code point, no whitespace,
//!   `,` and `:` separators, non-ASCII unescaped, control characters escaped exactly as
//!   Python's `json.dumps(ensure_ascii=False)` / orjson do (`\"`, `\\`, `\n`, `\r`, `\t`,
//!   `\b`, `\f`, other C0 as `\u00XX` lower-case hex).
//! Byte-for-byte equal to `orjson.dumps(orjson.loads(x), option=OPT_SORT_KEYS)` for every
//! input the Python reference accepts.
