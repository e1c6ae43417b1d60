//! W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` and
//! `tracestate` values of request headers and of `params._meta` (spec 2026-07-28 index,
//! "OpenTelemetry trace context"), read into an OpenTelemetry span context and written back.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Longest `tracestate` accepted: 32 list members of at most 256 bytes and their commas
/// (W3C §3.3.1.1 asks for at least 512 bytes to be propagated).
const MAX_TRACESTATE: usize = 32 * 257;

/// Reads a `traceparent` (and its `tracestate`) into a remote span context; `None` for a
/// value W3C §3.2 says to ignore. A version above 00 is read by its 00 fields, as §3.2.4 asks.
pub(crate) fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let value = traceparent.trim_matches(|c| c == ' ' || c == '\t');
    let mut parts = value.splitn(5, '-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if !is_lower_hex(version, 2) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; a later one may add fields after a dash.
    if version == "00" && rest.is_some() {
        return None;
    }
    if !(is_lower_hex(trace_id, 32) && is_lower_hex(span_id, 16) && is_lower_hex(flags, 2)) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    // Only the sampled bit is defined; the others are not propagated (§3.2.2.5).
    let flags = TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8());
    let state = tracestate
        .filter(|s| s.len() <= MAX_TRACESTATE)
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// The `traceparent` of a span context (version 00).
pub(crate) fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_spec_example_and_writes_it_back() {
        let cx = parse(SPEC_EXAMPLE, Some("congo=t61rcWkgMzE")).expect("valid");
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(
            format!("{:032x}", cx.trace_id()),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(cx.trace_state().get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(traceparent(&cx), SPEC_EXAMPLE);
        let unsampled = parse(&SPEC_EXAMPLE.replace("-01", "-00"), None).expect("valid");
        assert!(!unsampled.is_sampled());
        assert!(traceparent(&unsampled).ends_with("-00"));
    }

    #[test]
    fn ignores_what_w3c_says_to_ignore() {
        for bad in [
            "",
            "00",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7",
            // upper case, wrong lengths, not hex
            "00-0AF7651916CD43DD8448EB211C80319C-00F067AA0BA902B7-01",
            "00-0af7651916cd43dd8448eb211c80319-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-1",
            "00-0af7651916cd43dd8448eb211c8031zz-00f067aa0ba902b7-01",
            // all-zero ids, the forbidden version, extra fields in version 00
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse(bad, None).is_none(), "{bad:?}");
        }
        // A later version is read by the fields version 00 defines.
        let future = "01-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-03-what-comes";
        let cx = parse(future, None).expect("future version");
        assert!(cx.is_sampled());
        assert_eq!(traceparent(&cx), SPEC_EXAMPLE);
        // A broken tracestate is dropped, the traceparent still counts.
        let cx = parse(SPEC_EXAMPLE, Some("not a list member")).expect("valid");
        assert_eq!(cx.trace_state().header(), "");
    }
}
