//! Reading typed values out of result rows, with an error that names the column instead
//! of a panic when a stored value is not what this build expects.

use crate::StoreError;
use mysql_async::prelude::FromValue;
use mysql_async::{Row, Value};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use uuid::Uuid;

/// Takes column `name` out of `row` as a `T`.
pub(crate) fn take<T: FromValue>(row: &mut Row, name: &str) -> Result<T, StoreError> {
    match row.take_opt::<T, _>(name) {
        Some(Ok(value)) => Ok(value),
        Some(Err(e)) => Err(StoreError::Corrupt(format!("column {name}: {e}"))),
        None => Err(StoreError::Corrupt(format!("column {name} is missing"))),
    }
}

/// Takes a UUID stored as `CHAR(36)`.
pub(crate) fn take_uuid(row: &mut Row, name: &str) -> Result<Uuid, StoreError> {
    let text: String = take(row, name)?;
    parse_uuid(name, &text)
}

/// Takes a nullable UUID stored as `CHAR(36)`.
pub(crate) fn take_opt_uuid(row: &mut Row, name: &str) -> Result<Option<Uuid>, StoreError> {
    let text: Option<String> = take(row, name)?;
    text.map(|t| parse_uuid(name, &t)).transpose()
}

pub(crate) fn parse_uuid(column: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text)
        .map_err(|e| StoreError::Corrupt(format!("column {column}: {text:?} is not a UUID: {e}")))
}

/// Takes a `DATETIME(3)` the store wrote in UTC.
pub(crate) fn take_time(row: &mut Row, name: &str) -> Result<OffsetDateTime, StoreError> {
    let value: Value = take(row, name)?;
    datetime(name, value)
}

/// Takes a nullable `DATETIME(3)` the store wrote in UTC.
pub(crate) fn take_opt_time(
    row: &mut Row,
    name: &str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    match take::<Value>(row, name)? {
        Value::NULL => Ok(None),
        value => datetime(name, value).map(Some),
    }
}

/// The binary protocol returns `DATETIME` as `Value::Date`; every timestamp the store
/// writes is `UTC_TIMESTAMP(3)`, so it is UTC whatever the session's time zone.
fn datetime(column: &str, value: Value) -> Result<OffsetDateTime, StoreError> {
    let bad = |why: String| StoreError::Corrupt(format!("column {column}: {why}"));
    match value {
        Value::Date(year, month, day, hour, minute, second, micros) => {
            let month = Month::try_from(month).map_err(|e| bad(e.to_string()))?;
            let date = Date::from_calendar_date(i32::from(year), month, day)
                .map_err(|e| bad(e.to_string()))?;
            let time = Time::from_hms_micro(hour, minute, second, micros)
                .map_err(|e| bad(e.to_string()))?;
            Ok(PrimitiveDateTime::new(date, time).assume_utc())
        }
        other => Err(bad(format!("expected a DATETIME, got {other:?}"))),
    }
}

/// Cuts `text` to at most `max` characters: human-readable error texts from guests are
/// kept, but never allowed to make a write fail.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_from_binary_protocol() {
        let t = datetime("c", Value::Date(2026, 11, 24, 16, 44, 26, 123_000)).unwrap();
        assert_eq!(t.year(), 2026);
        assert_eq!(t.millisecond(), 123);
        assert!(datetime("c", Value::Date(2026, 13, 1, 0, 0, 0, 0)).is_err());
        assert!(datetime("c", Value::Int(5)).is_err());
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
