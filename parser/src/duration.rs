//! Go's duration syntax (`1m30s`, `1.5h`, `300ms`), as HEALTHCHECK's options are written.

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::digit0;
use nom::combinator::{all_consuming, opt, recognize, verify};
use nom::multi::many1;
use nom::sequence::pair;

/// One `<number><unit>` term: the number as text and the unit's length in nanoseconds.
fn term(input: &str) -> IResult<&str, (&str, u64)> {
    let number = verify(
        recognize(pair(digit0, opt(pair(tag("."), digit0)))),
        |s: &str| s.bytes().any(|b| b.is_ascii_digit()),
    );
    let unit = alt((
        tag("ns").map(|_| 1),
        tag("us").map(|_| 1_000),
        tag("\u{b5}s").map(|_| 1_000),
        tag("\u{3bc}s").map(|_| 1_000),
        tag("ms").map(|_| 1_000_000),
        tag("s").map(|_| 1_000_000_000),
        tag("m").map(|_| 60_000_000_000),
        tag("h").map(|_| 3_600_000_000_000),
    ));
    pair(number, unit).parse(input)
}

/// Parses a non-negative Go duration into nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (write it as 30s, 1m30s, 1.5h or 250ms)");
    if s == "0" {
        return Ok(0);
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} cannot be negative"));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    let (_, terms) = all_consuming(many1(term)).parse(body).map_err(|_| bad())?;
    let mut total: f64 = 0.0;
    for (number, unit) in terms {
        let n: f64 = number.parse().map_err(|_| bad())?;
        total += n * unit as f64;
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("30s", Some(30_000_000_000)),
            ("1m30s", Some(90_000_000_000)),
            ("1.5h", Some(5_400_000_000_000)),
            ("250ms", Some(250_000_000)),
            ("10us", Some(10_000)),
            ("10\u{b5}s", Some(10_000)),
            (".5s", Some(500_000_000)),
            ("+1s", Some(1_000_000_000)),
            ("1", None),
            ("s", None),
            ("-1s", None),
            ("1d", None),
            ("", None),
            ("1s ", None),
            ("99999999999999h", None),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go_duration(input).ok(), want, "{input:?}");
        }
    }
}
