//! The JSON Schema of the byte strings that [`crate::bytes`] writes by hand, for the API's
//! OpenAPI document. Fields use it with `#[schemars(with = "crate::schema::Base64Bytes")]`.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// A byte string: standard base64 when written; when read, base64 with optional padding (what
/// [`crate::bytes::decode`] takes) or an array of byte values.
pub struct Base64Bytes;

/// Exactly the strings [`crate::bytes::decode`] accepts.
const BASE64: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2,3})?={0,2}$";

impl JsonSchema for Base64Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Base64Bytes".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        if generator.contract().is_serialize() {
            json_schema!({
                "type": "string",
                "contentEncoding": "base64",
                "pattern": "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
            })
        } else {
            json_schema!({
                "anyOf": [
                    {"type": "string", "contentEncoding": "base64", "pattern": BASE64},
                    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}
                ]
            })
        }
    }

    fn inline_schema() -> bool {
        true
    }
}
