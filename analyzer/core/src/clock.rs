//! Event time: window names.

/// Formats a window length the way the API accepts it: `1m`, `5m`, `1h`, `90s`.
pub fn window_name(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `30s`, `5m`, `1h` or plain seconds.
pub fn parse_window(text: &str) -> Option<u64> {
    let text = text.trim();
    let (num, mult) = match text.chars().last()? {
        's' => (&text[..text.len() - 1], 1),
        'm' => (&text[..text.len() - 1], 60),
        'h' => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_names_round_trip() {
        for s in [30, 60, 300, 3600, 90] {
            assert_eq!(parse_window(&window_name(s)), Some(s));
        }
        assert_eq!(parse_window("5m"), Some(300));
        assert_eq!(parse_window("x"), None);
    }
}
