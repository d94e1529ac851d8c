//! The REST API's resources in Twilio's shapes, so that Twilio's helper libraries read
//! them: a call as Twilio's Call resource (its field names, RFC 2822 dates, `duration`
//! as a string, `uri` and `subresource_uris`), Twilio's paging fields, and dates as
//! Twilio writes them. Dialtone's own extras (`answer_time`, `end_cause`) ride along.

use serde_json::{json, Value};

use crate::store::{CallRecord, Subscription};

/// A UTC time's parts: (year, month 1-12, day, weekday 0 = Thursday, seconds of the day).
fn civil(ms: i64) -> (i64, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, days.rem_euclid(7), rem)
}

/// Milliseconds since the epoch as RFC 2822, the way Twilio's 2010-04-01 API writes
/// dates: `Tue, 01 Dec 2026 17:19:03 +0000`.
pub(crate) fn rfc2822(ms: i64) -> String {
    let (year, month, day, weekday, rem) = civil(ms);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let weekday = WEEKDAYS[usize::try_from(weekday).unwrap_or(0)];
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the epoch as ISO 8601, the way Twilio's v1 APIs write dates:
/// `2026-12-01T17:19:03Z`.
pub(crate) fn iso8601(ms: i64) -> String {
    let (year, month, day, _, rem) = civil(ms);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A call leg as Twilio's Call resource.
pub(crate) fn call(c: &CallRecord) -> Value {
    let base = format!("/2010-04-01/Accounts/{}/Calls/{}", c.account_sid, c.sid);
    let updated = c.end_time.or(c.answer_time).unwrap_or(c.start_time);
    json!({
        "sid": c.sid,
        "account_sid": c.account_sid,
        "parent_call_sid": c.parent_sid,
        "from": c.from,
        "from_formatted": c.from,
        "to": c.to,
        "to_formatted": c.to,
        "direction": c.direction,
        "status": c.status,
        "date_created": rfc2822(c.start_time),
        "date_updated": rfc2822(updated),
        "start_time": rfc2822(c.start_time),
        "end_time": c.end_time.map(rfc2822),
        "duration": c.duration.map(|d| d.to_string()),
        "answered_by": null,
        "api_version": "2010-04-01",
        "caller_name": null,
        "forwarded_from": null,
        "group_sid": null,
        "phone_number_sid": null,
        "price": null,
        "price_unit": "USD",
        "queue_time": "0",
        "trunk_sid": null,
        "uri": format!("{base}.json"),
        "subresource_uris": {
            "user_defined_messages": format!("{base}/UserDefinedMessages.json"),
            "user_defined_message_subscriptions": format!("{base}/UserDefinedMessageSubscriptions.json"),
        },
        "answer_time": c.answer_time.map(rfc2822),
        "end_cause": c.end_cause,
    })
}

/// A message subscription as Twilio's UserDefinedMessageSubscription resource (with
/// its `callback`).
pub(crate) fn subscription(s: &Subscription) -> Value {
    json!({
        "sid": s.sid,
        "account_sid": s.account_sid,
        "call_sid": s.call_sid,
        "date_created": rfc2822(s.created),
        "uri": format!("/2010-04-01/Accounts/{}/Calls/{}/UserDefinedMessageSubscriptions/{}.json", s.account_sid, s.call_sid, s.sid),
        "callback": s.callback,
    })
}

/// One page of a list, with Twilio's paging fields: `key` holds the items; `path` is
/// the list's path, `page` and `size` this page's number and size, and `more` whether
/// a next page exists.
pub(crate) fn page(key: &str, items: Vec<Value>, path: &str, page: i64, size: i64, more: bool) -> Value {
    let uri = |p: i64| format!("{path}?PageSize={size}&Page={p}");
    let start = page * size;
    let end = start + i64::try_from(items.len()).unwrap_or(0) - 1;
    let mut v = json!({
        "page": page,
        "page_size": size,
        "start": start,
        "end": end.max(start),
        "uri": uri(page),
        "first_page_uri": uri(0),
        "next_page_uri": if more { Some(uri(page + 1)) } else { None },
        "previous_page_uri": if page > 0 { Some(uri(page - 1)) } else { None },
    });
    v[key] = Value::Array(items);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc2822() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(1_796_145_543_999), "Tue, 01 Dec 2026 17:19:03 +0000");
        assert_eq!(rfc2822(-1_000), "Wed, 31 Dec 1969 23:59:59 +0000");
        assert_eq!(iso8601(1_796_145_543_999), "2026-12-01T17:19:03Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn pages_link_to_their_neighbours() {
        let p = page("calls", vec![json!(1), json!(2)], "/x/Calls.json", 1, 2, true);
        assert_eq!(p["calls"], json!([1, 2]));
        assert_eq!(p["next_page_uri"], "/x/Calls.json?PageSize=2&Page=2");
        assert_eq!(p["previous_page_uri"], "/x/Calls.json?PageSize=2&Page=0");
        assert_eq!((p["start"].as_i64(), p["end"].as_i64()), (Some(2), Some(3)));
        let last = page("calls", vec![], "/x/Calls.json", 0, 50, false);
        assert!(last["next_page_uri"].is_null() && last["previous_page_uri"].is_null());
    }
}
