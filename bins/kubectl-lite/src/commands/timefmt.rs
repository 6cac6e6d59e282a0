//! Times as kubectl prints them: ages (`5s`, `2m30s`, `3d4h`: apimachinery's
//! `duration.HumanDuration`) and `describe`'s RFC 1123 dates.
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An RFC 3339 timestamp as the API carries it; None when empty or malformed.
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    if s.is_empty() {
        return None;
    }
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// kubectl's `translateTimestampSince`: the age of `ts` at `now`, `<unknown>` when unset.
pub fn age(ts: &str, now: OffsetDateTime) -> String {
    match parse_timestamp(ts) {
        Some(t) => human_duration_signed((now - t).whole_seconds()),
        None => "<unknown>".to_string(),
    }
}

/// `duration.HumanDuration` of k8s.io/apimachinery (about two significant figures), from
/// whole seconds, which may be negative when clocks disagree: up to one second
/// in the future counts as now, more is `<invalid>`, as upstream.
pub fn human_duration_signed(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `describe`'s dates: Go's RFC1123Z, `Mon, 02 Jan 2006 15:04:05 -0700`; the text itself when
/// it does not parse, `<unset>` when empty.
pub fn rfc1123z(ts: &str) -> String {
    let Some(t) = parse_timestamp(ts) else {
        return if ts.is_empty() {
            "<unset>".to_string()
        } else {
            ts.to_string()
        };
    };
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let off = t.offset().whole_minutes();
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} {sign}{:02}{:02}",
        DAYS[t.weekday().number_days_from_monday() as usize],
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hd(secs: i64) -> String {
        human_duration_signed(secs)
    }

    #[test]
    fn human_duration_matches_apimachinery() {
        // The cases of apimachinery's duration_test.go, and each boundary.
        let m = 60;
        let h = 3600;
        let d = 24 * h;
        let y = 365 * d;
        for (secs, want) in [
            (0, "0s"),
            (1, "1s"),
            (5, "5s"),
            (119, "119s"),
            (2 * m, "2m"),
            (2 * m + 30, "2m30s"),
            (9 * m + 59, "9m59s"),
            (10 * m, "10m"),
            (10 * m + 59, "10m"),
            (179 * m, "179m"),
            (3 * h, "3h"),
            (3 * h + 30 * m, "3h30m"),
            (5 * h + 30 * m, "5h30m"),
            (7 * h + 59 * m, "7h59m"),
            (8 * h, "8h"),
            (47 * h + 59 * m, "47h"),
            (48 * h, "2d"),
            (3 * d, "3d"),
            (3 * d + 4 * h, "3d4h"),
            (7 * d + 23 * h, "7d23h"),
            (8 * d, "8d"),
            (2 * y - d, "729d"),
            (2 * y, "2y"),
            (2 * y + 10 * d, "2y10d"),
            (7 * y + 364 * d, "7y364d"),
            (8 * y, "8y"),
            (100 * y, "100y"),
        ] {
            assert_eq!(hd(secs), want, "{secs}s");
        }
        assert_eq!(human_duration_signed(-1), "0s");
        assert_eq!(human_duration_signed(-2), "<invalid>");
    }

    #[test]
    fn ages_are_measured_from_rfc3339_timestamps() {
        let now = parse_timestamp("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(age("2024-05-01T11:57:30Z", now), "2m30s");
        assert_eq!(age("2024-04-28T08:00:00Z", now), "3d4h");
        assert_eq!(age("2024-05-01T14:00:00+02:00", now), "0s");
        assert_eq!(age("", now), "<unknown>");
        assert_eq!(age("yesterday", now), "<unknown>");
    }

    #[test]
    fn describe_dates_are_rfc1123z() {
        assert_eq!(
            rfc1123z("2006-01-02T15:04:05-07:00"),
            "Mon, 02 Jan 2006 15:04:05 -0700"
        );
        assert_eq!(
            rfc1123z("2024-05-01T12:00:00Z"),
            "Wed, 01 May 2024 12:00:00 +0000"
        );
        assert_eq!(rfc1123z(""), "<unset>");
    }
}
