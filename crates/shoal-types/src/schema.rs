//! JSON Schemas of the types whose wire form is written by hand (custom `Serialize` and
//! `Deserialize`): each says exactly what that code writes and takes, for `/v1/openapi.json`.
//! Everything else derives `schemars::JsonSchema`, which follows the serde attributes.

use crate::secret::SecretData;
use crate::time::Timestamp;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// [`Timestamp`]: RFC 3339 in JSON (`2026-11-25T19:21:56.5Z`), as `Display` writes it and
/// `humantime::parse_rfc3339_weak` reads it.
impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        if generator.contract().is_serialize() {
            json_schema!({
                "type": "string",
                "format": "date-time",
                "description": "An instant in RFC 3339 (UTC), e.g. 2026-11-25T19:21:56.5Z."
            })
        } else {
            // `parse_rfc3339_weak` also takes a space for the `T` and no zone (UTC).
            json_schema!({
                "type": "string",
                "description": "An instant in RFC 3339, e.g. 2026-11-25T19:21:56.5Z (a space may replace \
                                the T; without a zone it is UTC)."
            })
        }
    }

    fn inline_schema() -> bool {
        true
    }
}

/// [`SecretData`]: standard base64 (with padding) of the bytes.
impl JsonSchema for SecretData {
    fn schema_name() -> Cow<'static, str> {
        "SecretData".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "contentEncoding": "base64",
            "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
            "description": "The content, standard base64 with padding."
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A `std::time::Duration` written by [`crate::time::duration`]: a human string (`10s`,
/// `1m 30s`, `500ms`, `0`). Fields use it with `#[schemars(with = "DurationString")]`.
pub struct DurationString;

impl JsonSchema for DurationString {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        if generator.contract().is_serialize() {
            // What `humantime::format_duration` writes: `0s`, or `1day 2h 3m 4s 5ms 6us 7ns`.
            const ITEM: &str = "[0-9]+(years?|months?|days?|h|m|s|ms|us|µs|ns)";
            json_schema!({
                "type": "string",
                "pattern": format!("^(0s|{ITEM}( {ITEM})*)$"),
                "description": "A duration: numbers with units, largest first (`1m 30s`, `500ms`, `0s`)."
            })
        } else {
            // What `humantime::parse_duration` reads (numbers, fractions and unit names, spaces
            // anywhere) or `0`; the exact rules are humantime's.
            json_schema!({
                "type": "string",
                "pattern": "^\\s*[0-9][0-9.\\sA-Za-zµ]*$",
                "description": "A duration: numbers with units (ns, us, ms, s, m, h, d, w, M, y and their long \
                                names), e.g. `10s`, `1m 30s`, `1.5h`, or 0."
            })
        }
    }

    fn inline_schema() -> bool {
        true
    }
}
