//! The shape check of EVENTS.md §1–2, §7 and §8: raw bytes to a typed event.
//!
//! The twin of `ledger.contract.schema.parse_event`: it accepts exactly the
//! payloads the reference accepts and gives the same canonical bytes. It gives
//! no messages: for a payload it refuses, the shell asks the reference why
//! (rejects are rare; their messages are the reference's, word for word).
//!
//! Rules (the reference's, in its words where they are subtle):
//! - one trailing "\n" or "\r\n" is stripped; the rest may be at most
//!   `MAX_LINE_BYTES`; arrays and objects nest at most `json::DEPTH_MAX` deep;
//! - a JSON object with exactly `v`, `id`, `platform`, `type`, `at`, `data`;
//!   `v` the integer 1; ids and platforms by their patterns; a known type;
//! - `at`: RFC 3339 with `T`, seconds, any fraction, `Z` or `±hh:mm` (hh ≤ 23),
//!   a real calendar date, no leap second, and both the local and the UTC
//!   instant within years 0001–9999;
//! - `data`: exactly the type's fields (no unknown, none missing), integers as
//!   JSON integers (never `1.0` or `true`) within their ranges, texts of at most
//!   200 code points, maps of ids within their sizes, and an output without
//!   authors passes 10 000 bps upstream.

use sha2::{Digest, Sha256};

use crate::json::{self, Value};

pub const MAX_LINE_BYTES: usize = 1024 * 1024;
pub const MAX_WEIGHT: i128 = 1_000_000;
pub const MAX_AMOUNT: i128 = (1 << 63) - 1;
pub const MAX_BPS: i128 = 10_000;
pub const MAX_TEXT_CHARS: usize = 200;
pub const MAX_AUTHORS: usize = 64;
pub const MAX_COMPONENTS: usize = 1000;
pub const MAX_USES: usize = 1000;
pub const MAX_USE_COUNT: i128 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMethod {
    ProRata,
    UserCentric,
}

impl PoolMethod {
    pub fn name(self) -> &'static str {
        match self {
            PoolMethod::ProRata => "pro_rata",
            PoolMethod::UserCentric => "user_centric",
        }
    }

    pub fn other(self) -> PoolMethod {
        match self {
            PoolMethod::ProRata => PoolMethod::UserCentric,
            PoolMethod::UserCentric => PoolMethod::ProRata,
        }
    }

    pub fn from_name(name: &str) -> Option<PoolMethod> {
        match name {
            "pro_rata" => Some(PoolMethod::ProRata),
            "user_centric" => Some(PoolMethod::UserCentric),
            _ => None,
        }
    }
}

/// Weights by id, in the event's order (the rules name the first unknown id
/// in that order, as the reference does); sorted where the fold needs it.
pub type Weights = Vec<(String, u32)>;

#[derive(Debug, Clone, PartialEq)]
pub enum EventData {
    ProsumerRegistered { prosumer: String },
    ContributionRecorded { work: String, authors: Weights },
    OutputComposed { work: String, components: Weights, authors: Weights, upstream_bps: u32 },
    ValueRealized { value: String, work: String, amount: u64, currency: String },
    ValueReversed { value: String, amount: u64 },
    PolicySet { fee_bps: u32 },
    WorkRetracted { work: String },
    WorkReinstated { work: String },
    WorkReassigned { work: String, authors: Weights },
    PayoutIssued { payout: String, prosumer: String, amount: u64, currency: String },
    PoolOpened { pool: String, currency: String, method: PoolMethod },
    PoolFunded { pool: String, subscriber: String, amount: u64 },
    UsageRecorded { pool: String, subscriber: String, uses: Vec<(String, u64)> },
    PoolClosed { pool: String },
    PayoutReturned { payout: String },
}

impl EventData {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventData::ProsumerRegistered { .. } => "prosumer.registered",
            EventData::ContributionRecorded { .. } => "contribution.recorded",
            EventData::OutputComposed { .. } => "output.composed",
            EventData::ValueRealized { .. } => "value.realized",
            EventData::ValueReversed { .. } => "value.reversed",
            EventData::PolicySet { .. } => "policy.set",
            EventData::WorkRetracted { .. } => "work.retracted",
            EventData::WorkReinstated { .. } => "work.reinstated",
            EventData::WorkReassigned { .. } => "work.reassigned",
            EventData::PayoutIssued { .. } => "payout.issued",
            EventData::PoolOpened { .. } => "pool.opened",
            EventData::PoolFunded { .. } => "pool.funded",
            EventData::UsageRecorded { .. } => "usage.recorded",
            EventData::PoolClosed { .. } => "pool.closed",
            EventData::PayoutReturned { .. } => "payout.returned",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub platform: String,
    pub at: String,
    /// The UTC month of `at`, "YYYY-MM": the statement period of its bookings.
    pub month: String,
    pub data: EventData,
}

#[derive(Debug, Clone)]
pub struct Parsed {
    pub event: Event,
    pub canonical: Vec<u8>,
    /// RFC 9162 leaf hash: SHA-256(0x00 || canonical).
    pub leaf_hash: [u8; 32],
}

/// A refused payload: its envelope's id and platform when they are strings
/// matching their patterns (`Envelope.event_id` / `platform_id`), to file the
/// reject under.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invalid {
    pub event_id: Option<String>,
    pub platform: Option<String>,
}

pub fn leaf_hash(canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(canonical);
    h.finalize().into()
}

/// Parse and check one payload; see the module doc.
pub fn parse_event(payload: &[u8]) -> Result<Parsed, Invalid> {
    let mut line = payload;
    if line.last() == Some(&b'\n') {
        line = &line[..line.len() - 1];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
    }
    if line.len() > MAX_LINE_BYTES {
        return Err(Invalid::default());
    }
    let value = json::parse(line).map_err(|_| Invalid::default())?;
    match check(&value) {
        Some(event) => {
            let mut canonical = Vec::with_capacity(line.len());
            json::write_canonical(&value, &mut canonical);
            let leaf_hash = leaf_hash(&canonical);
            Ok(Parsed { event, canonical, leaf_hash })
        }
        None => Err(envelope(&value)),
    }
}

fn envelope(value: &Value) -> Invalid {
    let field = |name: &str, ok: fn(&str) -> bool| value.get(name).and_then(Value::as_str).filter(|s| ok(s)).map(str::to_owned);
    Invalid { event_id: field("id", is_id), platform: field("platform", is_platform) }
}

/// `^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`
pub fn is_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b[1..].iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`
pub fn is_platform(s: &str) -> bool {
    let b = s.as_bytes();
    let lower = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 64 && lower(b[0]) && b[1..].iter().all(|&c| lower(c) || c == b'_' || c == b'-')
}

fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase())
}

fn is_content_hash(s: &str) -> bool {
    s.len() == 71 && s.starts_with("sha256:") && s[7..].bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The event, if `value` is a valid one.
fn check(value: &Value) -> Option<Event> {
    let pairs = value.as_object()?;
    if pairs.len() != 6 {
        return None;
    }
    let (mut v, mut id, mut platform, mut kind, mut at, mut data) = (None, None, None, None, None, None);
    for (k, x) in pairs {
        match k.as_str() {
            "v" => v = Some(x),
            "id" => id = Some(x),
            "platform" => platform = Some(x),
            "type" => kind = Some(x),
            "at" => at = Some(x),
            "data" => data = Some(x),
            _ => return None,
        }
    }
    if *v? != Value::Number(Some(1)) {
        return None;
    }
    let id = id?.as_str().filter(|s| is_id(s))?;
    let platform = platform?.as_str().filter(|s| is_platform(s))?;
    let kind = kind?.as_str()?;
    let at = at?.as_str()?;
    let month = at_month(at)?;
    let data = check_data(kind, data?)?;
    Some(Event { id: id.to_owned(), platform: platform.to_owned(), at: at.to_owned(), month, data })
}

/// A data object's fields by name: required ones must all be there, optional
/// ones may be, nothing else.
struct Fields<'a> {
    pairs: &'a [(String, Value)],
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, required: &[&str], optional: &[&str]) -> Option<Fields<'a>> {
        let pairs = value.as_object()?;
        let mut seen_required = 0;
        for (k, _) in pairs {
            if required.contains(&k.as_str()) {
                seen_required += 1;
            } else if !optional.contains(&k.as_str()) {
                return None;
            }
        }
        (seen_required == required.len()).then_some(Fields { pairs })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn id(&self, name: &str) -> Option<String> {
        self.get(name)?.as_str().filter(|s| is_id(s)).map(str::to_owned)
    }

    fn currency(&self, name: &str) -> Option<String> {
        self.get(name)?.as_str().filter(|s| is_currency(s)).map(str::to_owned)
    }

    fn int(&self, name: &str, low: i128, high: i128) -> Option<i128> {
        match self.get(name)? {
            Value::Number(Some(n)) if (low..=high).contains(n) => Some(*n),
            _ => None,
        }
    }

    fn amount(&self, name: &str) -> Option<u64> {
        self.int(name, 1, MAX_AMOUNT).map(|n| n as u64)
    }

    /// An optional text field: absent, or a string of at most 200 code points.
    fn text_ok(&self, name: &str) -> bool {
        match self.get(name) {
            None => true,
            Some(Value::String(s)) => s.chars().count() <= MAX_TEXT_CHARS,
            Some(_) => false,
        }
    }

    fn weights(&self, name: &str, min: usize, max: usize) -> Option<Weights> {
        weights(self.get(name)?, min, max, MAX_WEIGHT).map(|w| w.into_iter().map(|(k, n)| (k, n as u32)).collect())
    }
}

/// A map of ids to integers in 1..=`high`, with `min`..=`max` entries, in the event's order.
fn weights(value: &Value, min: usize, max: usize, high: i128) -> Option<Vec<(String, u64)>> {
    let pairs = value.as_object()?;
    if pairs.len() < min || pairs.len() > max {
        return None;
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        if !is_id(k) {
            return None;
        }
        match v {
            Value::Number(Some(n)) if (1..=high).contains(n) => out.push((k.clone(), *n as u64)),
            _ => return None,
        }
    }
    Some(out)
}

fn check_data(kind: &str, value: &Value) -> Option<EventData> {
    Some(match kind {
        "prosumer.registered" => {
            let f = Fields::of(value, &["prosumer"], &["name"])?;
            f.text_ok("name").then_some(())?;
            EventData::ProsumerRegistered { prosumer: f.id("prosumer")? }
        }
        "contribution.recorded" => {
            let f = Fields::of(value, &["work", "authors"], &["kind", "content_hash"])?;
            f.text_ok("kind").then_some(())?;
            if let Some(h) = f.get("content_hash") {
                h.as_str().filter(|s| is_content_hash(s))?;
            }
            EventData::ContributionRecorded { work: f.id("work")?, authors: f.weights("authors", 1, MAX_AUTHORS)? }
        }
        "output.composed" => {
            let f = Fields::of(value, &["work", "components"], &["authors", "upstream_bps", "kind"])?;
            f.text_ok("kind").then_some(())?;
            let authors = match f.get("authors") {
                None => Vec::new(),
                Some(_) => f.weights("authors", 0, MAX_AUTHORS)?,
            };
            let upstream_bps = match f.get("upstream_bps") {
                None => MAX_BPS,
                Some(_) => f.int("upstream_bps", 0, MAX_BPS)?,
            } as u32;
            if authors.is_empty() && i128::from(upstream_bps) != MAX_BPS {
                return None;
            }
            EventData::OutputComposed {
                work: f.id("work")?,
                components: f.weights("components", 1, MAX_COMPONENTS)?,
                authors,
                upstream_bps,
            }
        }
        "value.realized" => {
            let f = Fields::of(value, &["value", "work", "amount", "currency"], &["source"])?;
            f.text_ok("source").then_some(())?;
            EventData::ValueRealized {
                value: f.id("value")?,
                work: f.id("work")?,
                amount: f.amount("amount")?,
                currency: f.currency("currency")?,
            }
        }
        "value.reversed" => {
            let f = Fields::of(value, &["value", "amount"], &["reason"])?;
            f.text_ok("reason").then_some(())?;
            EventData::ValueReversed { value: f.id("value")?, amount: f.amount("amount")? }
        }
        "policy.set" => {
            let f = Fields::of(value, &["platform_fee_bps"], &[])?;
            EventData::PolicySet { fee_bps: f.int("platform_fee_bps", 0, MAX_BPS)? as u32 }
        }
        "work.retracted" | "work.reinstated" => {
            let f = Fields::of(value, &["work"], &["reason"])?;
            f.text_ok("reason").then_some(())?;
            let work = f.id("work")?;
            if kind == "work.retracted" {
                EventData::WorkRetracted { work }
            } else {
                EventData::WorkReinstated { work }
            }
        }
        "work.reassigned" => {
            let f = Fields::of(value, &["work", "authors"], &[])?;
            EventData::WorkReassigned { work: f.id("work")?, authors: f.weights("authors", 0, MAX_AUTHORS)? }
        }
        "payout.issued" => {
            let f = Fields::of(value, &["payout", "prosumer", "amount", "currency"], &["reference"])?;
            f.text_ok("reference").then_some(())?;
            EventData::PayoutIssued {
                payout: f.id("payout")?,
                prosumer: f.id("prosumer")?,
                amount: f.amount("amount")?,
                currency: f.currency("currency")?,
            }
        }
        "pool.opened" => {
            let f = Fields::of(value, &["pool", "currency", "method"], &["name"])?;
            f.text_ok("name").then_some(())?;
            EventData::PoolOpened {
                pool: f.id("pool")?,
                currency: f.currency("currency")?,
                method: PoolMethod::from_name(f.get("method")?.as_str()?)?,
            }
        }
        "pool.funded" => {
            let f = Fields::of(value, &["pool", "subscriber", "amount"], &[])?;
            EventData::PoolFunded { pool: f.id("pool")?, subscriber: f.id("subscriber")?, amount: f.amount("amount")? }
        }
        "usage.recorded" => {
            let f = Fields::of(value, &["pool", "subscriber", "uses"], &[])?;
            EventData::UsageRecorded {
                pool: f.id("pool")?,
                subscriber: f.id("subscriber")?,
                uses: weights(f.get("uses")?, 1, MAX_USES, MAX_USE_COUNT)?,
            }
        }
        "pool.closed" => {
            let f = Fields::of(value, &["pool"], &[])?;
            EventData::PoolClosed { pool: f.id("pool")? }
        }
        "payout.returned" => {
            let f = Fields::of(value, &["payout"], &["reason"])?;
            f.text_ok("reason").then_some(())?;
            EventData::PayoutReturned { payout: f.id("payout")? }
        }
        _ => return None,
    })
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut n = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(c - b'0');
    }
    Some(n)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The UTC month ("YYYY-MM") of an acceptable `at`, or None (`at_error` of the
/// reference says why).
pub fn at_month(at: &str) -> Option<String> {
    let b = at.as_bytes();
    // YYYY-MM-DDThh:mm:ss[.f+](Z|±hh:mm)
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &rest[1 + n..];
    }
    let offset_minutes: i64 = match rest {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2])?;
            let m = digits(&[*m1, *m2])?;
            if h > 23 || m > 59 {
                return None;
            }
            let total = i64::from(h * 60 + m);
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let year = i64::from(year);
    if year < 1 || day > days_in_month(year, month) {
        return None; // year 0 has no datetime in the reference; not a real calendar date
    }
    if offset_minutes == 0 {
        return Some(at[..7].to_owned());
    }
    // local - offset = UTC; only the date can move, by at most a day.
    let minutes = i64::from(hour * 60 + minute) - offset_minutes;
    let (mut y, mut m, mut d) = (year, month, day);
    if minutes < 0 {
        if d > 1 {
            d -= 1;
        } else if m > 1 {
            m -= 1;
            d = days_in_month(y, m);
        } else {
            y -= 1;
            m = 12;
            d = 31;
        }
    } else if minutes >= 24 * 60 {
        if d < days_in_month(y, m) {
            d += 1;
        } else if m < 12 {
            m += 1;
            d = 1;
        } else {
            y += 1;
            m = 1;
            d = 1;
        }
    }
    let _ = d;
    if !(1..=9999).contains(&y) {
        return None; // the UTC instant leaves the years a statement can name
    }
    Some(format!("{y:04}-{m:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_months_are_utc() {
        assert_eq!(at_month("2026-11-02T08:00:00+01:00").as_deref(), Some("2026-11"));
        assert_eq!(at_month("2026-11-01T00:30:00+01:00").as_deref(), Some("2026-10"));
        assert_eq!(at_month("2026-12-31T23:30:00-01:00").as_deref(), Some("2027-01"));
        assert_eq!(at_month("2026-02-29T00:00:00Z"), None);
        assert_eq!(at_month("2024-02-29T00:00:00.123456789Z").as_deref(), Some("2024-02"));
        assert_eq!(at_month("2026-01-01T00:00:60Z"), None);
        assert_eq!(at_month("0001-01-01T00:30:00+01:00"), None);
        assert_eq!(at_month("9999-12-31T23:30:00-01:00"), None);
        assert_eq!(at_month("0000-01-01T00:00:00Z"), None);
        assert_eq!(at_month("2026-01-01T00:00:00+24:00"), None);
        assert_eq!(at_month("2026-01-01t00:00:00Z"), None);
        assert_eq!(at_month("2026-01-01T00:00:00.Z"), None);
    }

    #[test]
    fn the_worked_examples_first_event_parses_to_its_canonical_bytes() {
        let p = parse_event(
            b"{\"v\": 1, \"id\": \"e1\", \"platform\": \"demo\", \"type\": \"policy.set\", \"at\": \"2026-10-01T00:00:00Z\", \"data\": {\"platform_fee_bps\": 1000}}\n",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(p.canonical).unwrap(),
            "{\"at\":\"2026-10-01T00:00:00Z\",\"data\":{\"platform_fee_bps\":1000},\"id\":\"e1\",\"platform\":\"demo\",\"type\":\"policy.set\",\"v\":1}"
        );
        assert_eq!(p.event.data, EventData::PolicySet { fee_bps: 1000 });
    }

    #[test]
    fn refusals_keep_the_envelope() {
        let e = parse_event(br#"{"v":1,"id":"x1","platform":"demo","type":"value.realized","at":"2026-10-01T00:00:00Z","data":{"value":"v","work":"w","amount":5.0,"currency":"USD"}}"#)
            .unwrap_err();
        assert_eq!(e, Invalid { event_id: Some("x1".into()), platform: Some("demo".into()) });
        assert!(parse_event(br#"{"v":true,"id":"x","platform":"p","type":"policy.set","at":"2026-10-01T00:00:00Z","data":{"platform_fee_bps":1}}"#).is_err());
    }
}
