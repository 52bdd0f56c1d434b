use time::{Date, Month};

/// Why a date string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not `YYYY-MM-DD`.
    #[error("must be a date in YYYY-MM-DD form (日期格式应为YYYY-MM-DD)")]
    Format,
    /// Well-formed but not on the calendar, e.g. 2023-02-29.
    #[error("is not a real calendar date (日期不存在)")]
    Invalid,
}

fn digits_value(b: &[u8]) -> u32 {
    b.iter()
        .fold(0, |acc, d| acc * 10 + u32::from(d.wrapping_sub(b'0')))
}

/// Strict `YYYY-MM-DD`: exactly ten characters, zero-padded, no time part,
/// so the same day always has one spelling in requests and storage.
pub fn parse_date(s: &str) -> Result<Date, DateError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [&b[0..4], &b[5..7], &b[8..10]]
            .iter()
            .all(|part| part.iter().all(u8::is_ascii_digit));
    if !shape_ok {
        return Err(DateError::Format);
    }
    let year = i32::try_from(digits_value(&b[0..4])).map_err(|_| DateError::Invalid)?;
    let month = u8::try_from(digits_value(&b[5..7]))
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or(DateError::Invalid)?;
    let day = u8::try_from(digits_value(&b[8..10])).map_err(|_| DateError::Invalid)?;
    Date::from_calendar_date(year, month, day).map_err(|_| DateError::Invalid)
}

/// `YYYY-MM-DD`, the inverse of [`parse_date`] for years 0-9999.
#[must_use]
pub fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The certificate style `2020年01月01日`.
#[must_use]
pub fn format_date_zh(d: Date) -> String {
    format!(
        "{:04}年{:02}月{:02}日",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// 使用期限 as printed on a certificate: `2020年01月01日起2090年12月31日止`.
#[must_use]
pub fn term_of_use_zh(start: Date, end: Date) -> String {
    format!("{}起{}止", format_date_zh(start), format_date_zh(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn strict_parsing() {
        assert_eq!(parse_date("2020-01-01"), Ok(date!(2020 - 01 - 01)));
        assert_eq!(parse_date("2024-02-29"), Ok(date!(2024 - 02 - 29)));
        for bad in [
            "2020-1-01",
            "2020/01/01",
            "20200101",
            "2020-01-01T00:00",
            " 2020-01-01",
            "２020-01-01",
            "",
        ] {
            assert_eq!(parse_date(bad), Err(DateError::Format), "{bad:?}");
        }
        for bad in [
            "2023-02-29",
            "2020-13-01",
            "2020-00-10",
            "2020-04-31",
            "2020-01-00",
        ] {
            assert_eq!(parse_date(bad), Err(DateError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn formatting() {
        let d = date!(2020 - 01 - 01);
        assert_eq!(format_date(d), "2020-01-01");
        assert_eq!(parse_date(&format_date(d)), Ok(d));
        assert_eq!(format_date_zh(d), "2020年01月01日");
        assert_eq!(
            term_of_use_zh(d, date!(2090 - 12 - 31)),
            "2020年01月01日起2090年12月31日止"
        );
        assert_eq!(
            term_of_use_zh(date!(2001 - 04 - 20), date!(2071 - 04 - 19)),
            "2001年04月20日起2071年04月19日止"
        );
    }
}
