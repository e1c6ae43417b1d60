//! The few members of a request's `params` the proxy routes or judges by, read member by
//! member with borrowed raw values — in the same pass that reads `id` and `method`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::PROTOCOL_VERSION_META;

/// The members of `params` the proxy reads; anything that is not an object reads as empty
/// (JSON-RPC allows positional params, which no MCP method uses).
#[derive(Debug, Default)]
pub(super) struct Params<'a> {
    pub(super) name: Option<&'a RawValue>,
    pub(super) uri: Option<&'a RawValue>,
    pub(super) request_id: Option<&'a RawValue>,
    pub(super) protocol_version: Option<&'a RawValue>,
    /// The raw `_meta.progressToken`.
    pub(super) progress_token: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor(false))
    }
}

/// Reads `params` (or, with `.0`, its `_meta`) member by member, borrowing raw values.
struct ParamsVisitor(bool);

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'de>, A::Error> {
        let mut out = Params::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match (self.0, &*key) {
                (false, "name") => out.name = Some(map.next_value()?),
                (false, "uri") => out.uri = Some(map.next_value()?),
                (false, "requestId") => out.request_id = Some(map.next_value()?),
                (false, "_meta") => {
                    let meta: Meta<'de> = map.next_value()?;
                    out.protocol_version = meta.0.protocol_version;
                    out.progress_token = meta.0.progress_token;
                }
                (true, "progressToken") => out.progress_token = Some(map.next_value()?),
                (true, PROTOCOL_VERSION_META) => out.protocol_version = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Params<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Params::default())
    }

    fn visit_unit<E>(self) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Params<'de>, E> {
        Ok(Params::default())
    }
}

/// `params._meta`, read with the same visitor.
struct Meta<'a>(Params<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Meta<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor(true)).map(Meta)
    }
}
