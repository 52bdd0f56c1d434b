/// The one-character abbreviation (简称) printed at the start of a certificate
/// number, looked up by the first two digits (省级代码) of a GB/T 2260 code.
///
/// Covers all 34 provincial-level divisions; `None` for unknown prefixes or
/// input shorter than two characters.
#[must_use]
pub fn province_abbr(county_code: &str) -> Option<&'static str> {
    let abbr = match county_code.get(0..2)? {
        "11" => "京",
        "12" => "津",
        "13" => "冀",
        "14" => "晋",
        "15" => "蒙",
        "21" => "辽",
        "22" => "吉",
        "23" => "黑",
        "31" => "沪",
        "32" => "苏",
        "33" => "浙",
        "34" => "皖",
        "35" => "闽",
        "36" => "赣",
        "37" => "鲁",
        "41" => "豫",
        "42" => "鄂",
        "43" => "湘",
        "44" => "粤",
        "45" => "桂",
        "46" => "琼",
        "50" => "渝",
        "51" => "川",
        "52" => "贵",
        "53" => "云",
        "54" => "藏",
        "61" => "陕",
        "62" => "甘",
        "63" => "青",
        "64" => "宁",
        "65" => "新",
        "71" => "台",
        "81" => "港",
        "82" => "澳",
        _ => return None,
    };
    Some(abbr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_prefixes() {
        assert_eq!(province_abbr("140827"), Some("晋"));
        assert_eq!(province_abbr("411702"), Some("豫"));
        assert_eq!(province_abbr("441903"), Some("粤"));
        assert_eq!(province_abbr("371602"), Some("鲁"));
        assert_eq!(province_abbr("340121"), Some("皖"));
        assert_eq!(province_abbr("82"), Some("澳"));
        assert_eq!(province_abbr("000000"), None);
        assert_eq!(province_abbr("99"), None);
        assert_eq!(province_abbr("1"), None);
        assert_eq!(province_abbr("晋"), None);
    }

    #[test]
    fn all_34_divisions_are_distinct() {
        let codes = [
            11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50,
            51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
        ];
        let mut seen: Vec<&str> = codes
            .iter()
            .filter_map(|c| province_abbr(&c.to_string()))
            .collect();
        assert_eq!(seen.len(), 34);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 34);
    }
}
