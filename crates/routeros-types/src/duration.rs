//! RouterOS durations: `1d`, `1w2d3h4m5s`, `1.5s`, `453us`, a bare number of seconds, and the
//! clock forms `hh:mm:ss` and `1d 00:00:00`.

use std::time::Duration;

/// A duration string that RouterOS would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 30s, 15m, 1h30m, 1d, 2w, 00:05:00)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

fn err(input: &str, reason: &'static str) -> DurationError {
    DurationError {
        input: input.chars().take(64).collect(),
        reason,
    }
}

const NS: u128 = 1_000_000_000;

const UNITS: &[(&str, u128)] = &[
    ("w", 604_800 * NS),
    ("d", 86_400 * NS),
    ("h", 3_600 * NS),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
    ("m", 60 * NS),
    ("s", NS),
];

/// The longest duration accepted (about 136 years; RouterOS itself caps timeouts far lower).
const MAX_NANOS: u128 = u32::MAX as u128 * NS;

/// Parses a RouterOS duration.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(err(input, "empty"));
    }
    let mut total: u128 = 0;
    let mut parts = s.split_whitespace().peekable();
    while let Some(part) = parts.next() {
        let is_last = parts.peek().is_none();
        let nanos = if part.contains(':') {
            if !is_last {
                return Err(err(input, "the clock form hh:mm:ss must come last"));
            }
            parse_clock(part).ok_or_else(|| err(input, "bad clock form, expected hh:mm:ss"))?
        } else {
            parse_units(part).map_err(|r| err(input, r))?
        };
        total = total.saturating_add(nanos);
        if total > MAX_NANOS {
            return Err(err(input, "too long"));
        }
    }
    let secs = (total / NS) as u64;
    Ok(Duration::new(secs, (total % NS) as u32))
}

/// `digits[.digits]` times `factor` nanoseconds, exactly; `None` when it is not a number or
/// absurdly large.
fn scaled(number: &str, factor: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 20
    {
        return None;
    }
    let mut value = if int.is_empty() {
        0
    } else {
        int.parse::<u128>().ok()?.checked_mul(factor)?
    };
    let mut scale = factor;
    for d in frac.bytes().take(18) {
        scale /= 10;
        value = value.checked_add(u128::from(d - b'0') * scale)?;
    }
    Some(value)
}

fn parse_clock(s: &str) -> Option<u128> {
    let fields: Vec<&str> = s.split(':').collect();
    let [h, m, sec] = fields.as_slice() else {
        return None;
    };
    if m.len() != 2 || h.is_empty() || h.contains('.') || m.contains('.') {
        return None;
    }
    let h = scaled(h, 3_600 * NS)?;
    let m = scaled(m, 60 * NS)?;
    let sec = scaled(sec, NS)?;
    if m >= 3_600 * NS || sec >= 60 * NS {
        return None;
    }
    Some(h + m + sec)
}

fn parse_units(s: &str) -> Result<u128, &'static str> {
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return Err("expected a number");
        }
        let number = &rest[..num_end];
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let factor = if unit.is_empty() {
            NS // a bare trailing number is seconds
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .ok_or("unknown unit (use w, d, h, m, s, ms)")?
                .1
        };
        total = total.saturating_add(scaled(number, factor).ok_or("bad number")?);
    }
    Ok(total)
}

/// Formats a duration the way RouterOS prints it: `0s`, `4m52s`, `23h59m52s`, `2d20h12m20s`,
/// `1w`, with `ms` for a sub-second part.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 && millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800u64),
        ("d", 86_400),
        ("h", 3_600),
        ("m", 60),
        ("s", 1),
    ] {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> f64 {
        parse_duration(s).unwrap().as_secs_f64()
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(secs("1d"), 86_400.0);
        assert_eq!(secs("12h"), 43_200.0);
        assert_eq!(secs("30m"), 1_800.0);
        assert_eq!(
            secs("1w2d3h4m5s"),
            604_800.0 + 2.0 * 86_400.0 + 3.0 * 3_600.0 + 4.0 * 60.0 + 5.0
        );
        assert_eq!(secs("90"), 90.0);
        assert_eq!(secs("1.5s"), 1.5);
        assert_eq!(secs("500ms"), 0.5);
        assert!((secs("453us") - 0.000_453).abs() < 1e-9);
        assert_eq!(secs("00:05:00"), 300.0);
        assert_eq!(secs("1d 00:00:10"), 86_410.0);
        assert_eq!(
            secs("35w13h13m15s"),
            35.0 * 604_800.0 + 13.0 * 3600.0 + 13.0 * 60.0 + 15.0
        );
        assert_eq!(secs("0s"), 0.0);
        assert_eq!(secs("1m30"), 90.0);
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in [
            "",
            "abc",
            "1x",
            "-1s",
            "1..5s",
            "s",
            "00:60:00",
            "1:2",
            "10:00:00 1d",
            "1e9w",
        ] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("examples"), "{bad}: {e}");
        }
        assert!(parse_duration("99999999w").is_err());
    }

    #[test]
    fn formats_like_routeros() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(292)), "4m52s");
        assert_eq!(format_duration(Duration::from_secs(86_392)), "23h59m52s");
        assert_eq!(
            format_duration(Duration::from_secs(2 * 86_400 + 20 * 3600 + 12 * 60 + 20)),
            "2d20h12m20s"
        );
        assert_eq!(format_duration(Duration::from_secs(604_800)), "1w");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
    }

    proptest::proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..(10_000u64 * 86_400_000)) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)).unwrap().as_millis(), d.as_millis());
        }
    }
}
