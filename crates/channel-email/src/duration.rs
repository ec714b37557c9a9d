//! Durations in an account's configuration, written for people: `"300ms"`, `"60s"`, `"5m"`,
//! `"1h"`, `"7d"`; a bare number is seconds. Used with `#[serde(with = "duration")]`.

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

const EXPECTED: &str =
    "a duration such as \"300ms\", \"60s\", \"5m\", \"1h\" or \"7d\" (a bare number is seconds)";

/// Writes `d` in the largest unit that holds it exactly.
pub(crate) fn to_text(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    for (unit, per) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(per) {
            return format!("{}{unit}", s / per);
        }
    }
    format!("{s}s")
}

/// Reads `"300ms"`, `"60s"`, `"5m"`, `"1h"`, `"7d"` or `"250ns"`.
pub(crate) fn from_text(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let per_second = |k: u64| n.checked_mul(k).map(Duration::from_secs);
    match unit.trim() {
        "ns" => Some(Duration::from_nanos(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" | "min" => per_second(60),
        "h" => per_second(3_600),
        "d" => per_second(86_400),
        _ => None,
    }
}

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&to_text(*d))
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            from_text(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_the_largest_exact_unit_and_read_back() {
        for (d, text) in [
            (Duration::from_millis(300), "300ms"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(29 * 60), "29m"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(to_text(d), text);
            assert_eq!(from_text(text), Some(d));
        }
        assert_eq!(from_text("5 min"), Some(Duration::from_secs(300)));
        assert_eq!(from_text("soon"), None);
        assert_eq!(from_text("5 weeks"), None);
        assert_eq!(from_text("-5s"), None);
    }
}
