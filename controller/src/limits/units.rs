//! Number-with-unit parsing shared by the memory, IO and bandwidth types.

/// Splits `"1.5Gi"` into `("1.5", "Gi")`; spaces between number and unit are allowed, as
/// docker allows them (`"1.5 GiB"`).
pub(crate) fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], s[end..].trim_start())
}

/// `number * multiplier` for a decimal `number` such as `"10"` or `"1.25"`, rounded down to an
/// integer. Exact (integer arithmetic), so `"0.1"` with multiplier 1000 is exactly 100.
pub(crate) fn scale(number: &str, multiplier: u64) -> Result<u64, String> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err("no number".into());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{number:?} is not a decimal number"));
    }
    if int.len() > 20 || frac.len() > 18 {
        return Err("too many digits".into());
    }
    let too_large = || "too large".to_owned();
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let mut value = int
        .checked_mul(u128::from(multiplier))
        .ok_or_else(too_large)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().map_err(|_| too_large())?;
        let denom = 10u128.pow(u32::try_from(frac.len()).map_err(|_| too_large())?);
        value += digits * u128::from(multiplier) / denom;
    }
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_exact() {
        assert_eq!(scale("1.5", 1000), Ok(1500));
        assert_eq!(scale("0.1", 1000), Ok(100));
        assert_eq!(scale(".5", 2), Ok(1));
        assert_eq!(scale("3", 1 << 20), Ok(3 << 20));
        assert_eq!(scale("0.0001", 1000), Ok(0));
        assert!(scale("1.2.3", 1).is_err());
        assert!(scale("", 1).is_err());
        assert!(scale("99999999999999999999", 1 << 40).is_err());
    }

    #[test]
    fn split_unit_keeps_number_and_unit() {
        assert_eq!(split_unit("1.5Gi"), ("1.5", "Gi"));
        assert_eq!(split_unit(" 10 mbit "), ("10", "mbit"));
        assert_eq!(split_unit("max"), ("", "max"));
    }
}
