//! Sizes (`4GiB`, `16MiB`, `100MB`, `1048576`) and durations (`30s`, `5m`, `250ms`, `2h`,
//! a bare number is seconds) as written in the configuration.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct UnitError(String);

pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        UnitError(format!(
            "invalid size {s:?}: expected a number of bytes or e.g. \"4GiB\""
        ))
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(UnitError(format!(
                "invalid size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError(format!("size {s:?} overflows")))
}

/// Parses a duration into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        UnitError(format!(
            "invalid duration {s:?}: expected e.g. \"30s\", \"5m\", \"250ms\""
        ))
    })?;
    let mult: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(UnitError(format!(
                "invalid duration unit {other:?} in {s:?} (use ms, s, m, h)"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| UnitError(format!("duration {s:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("5"), Ok(5_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert!(parse_duration_ms("soon").is_err());
    }
}
