//! The writer thread of the audit log: formats the records it is handed and writes them in
//! batches, reopening the file on SIGHUP.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use super::text::{ISS, REQUEST_ID, SERVER, SESSION, SUB, TARGET};
use super::{Outcome, QUEUE, Queue, Record, Sink, WRITE_INTERVAL};

/// The wall clock at one instant of the monotonic one, read once per batch: a record carries
/// only the `Instant` its request came at (one clock read fewer on the request's task). It
/// keeps the last second it wrote as text: the lines of a batch mostly share it.
struct Clock {
    system: SystemTime,
    instant: Instant,
    /// Seconds since the epoch of `stamp`, and `stamp`: `2026-12-02T19:10:24.`.
    second: u64,
    stamp: Vec<u8>,
}

impl Clock {
    fn new() -> Self {
        Self {
            system: SystemTime::now(),
            instant: Instant::now(),
            second: u64::MAX,
            stamp: Vec::with_capacity(24),
        }
    }

    /// Reads both clocks again (once per batch).
    fn tick(&mut self) {
        self.system = SystemTime::now();
        self.instant = Instant::now();
    }

    fn wall(&self, at: Instant) -> SystemTime {
        let ago = self.instant.saturating_duration_since(at);
        self.system.checked_sub(ago).unwrap_or(self.system)
    }

    /// `2026-12-02T19:10:24.123Z` (RFC 3339, UTC, milliseconds) of the request that came
    /// at `at`, appended to `out`.
    fn rfc3339_millis(&mut self, at: Instant, out: &mut Vec<u8>) {
        let since = self
            .wall(at)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.second {
            self.second = since.as_secs();
            self.stamp.clear();
            date_time(self.second, &mut self.stamp);
        }
        out.extend_from_slice(&self.stamp);
        padded(out, u64::from(since.subsec_millis()), 3);
        out.push(b'Z');
    }
}

impl Record {
    /// Appends the record as one JSON line: `time`, `request_id`, `client`, `iss`, `sub`,
    /// `server`, `transport`, `era`, `session`, `method`, `target`, `outcome`, then `error_code`
    /// or `status` and `reason` when they apply, `duration_ms`, `request_bytes`,
    /// `response_bytes`, and `arguments` when included. Written field by field rather than
    /// through a derived `Serialize`: the writer thread shares two cores with the proxy and the
    /// children, and this is a third of its instructions per line.
    fn write_to(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        let text = &self.text;
        out.extend_from_slice(b"{\"time\":\"");
        clock.rfc3339_millis(self.started, out);
        out.extend_from_slice(b"\",\"request_id\":");
        string(out, text.get(REQUEST_ID).unwrap_or_default());
        out.extend_from_slice(b",\"client\":");
        match self.client {
            Some(std::net::IpAddr::V4(ip)) => {
                out.push(b'"');
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    decimal(out, u64::from(octet));
                }
                out.push(b'"');
            }
            Some(ip) => {
                let _ = write!(out, "\"{ip}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        field(out, "iss", text.get(ISS));
        field(out, "sub", text.get(SUB));
        field(out, "server", text.get(SERVER));
        let transport = if self.era == "legacy" {
            "sse"
        } else {
            "streamable"
        };
        plain(out, "transport", transport);
        plain(out, "era", self.era);
        field(out, "session", text.get(SESSION));
        field(out, "method", self.method.as_deref());
        field(out, "target", text.get(TARGET));
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Denied => "denied",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused { .. } => "refused",
        };
        plain(out, "outcome", outcome);
        match self.outcome {
            Outcome::Error(code) => number(out, "error_code", code),
            Outcome::Refused { status, reason } => {
                number(out, "status", status);
                plain(out, "reason", reason);
            }
            Outcome::Ok | Outcome::Denied | Outcome::Cancelled => {}
        }
        // Milliseconds with three decimals, from whole microseconds (no float formatting).
        key(out, "duration_ms");
        let micros = (self.duration.as_nanos() + 500) / 1000;
        decimal(out, u64::try_from(micros / 1000).unwrap_or(u64::MAX));
        out.push(b'.');
        padded(out, u64::try_from(micros % 1000).unwrap_or(0), 3);
        key(out, "request_bytes");
        decimal(out, self.request_bytes as u64);
        key(out, "response_bytes");
        decimal(out, self.response_bytes as u64);
        if let Some(arguments) = &self.arguments {
            out.extend_from_slice(b",\"arguments\":");
            // Valid JSON as received (a `RawValue`); one line, since the body was one line or
            // pretty-printed JSON whose newlines are whitespace: those are replaced.
            out.extend(
                arguments
                    .get()
                    .bytes()
                    .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
            );
        }
        out.extend_from_slice(b"}\n");
    }
}

/// `,"name":`.
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"name":"value"` for a value of the proxy's own (a label: nothing to escape).
fn plain(out: &mut Vec<u8>, name: &str, value: &'static str) {
    key(out, name);
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
}

/// An unsigned integer in decimal.
/// The last `width` decimal digits of `value`, zero-padded.
fn padded(out: &mut Vec<u8>, value: u64, width: u32) {
    for i in (0..width).rev() {
        out.push(b'0' + (value / 10u64.pow(i) % 10) as u8);
    }
}

fn decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `,"name":"value"` (escaped), or `,"name":null`.
fn field(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    key(out, name);
    match value {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `,"name":N` (serde_json's number format).
fn number(out: &mut Vec<u8>, name: &str, value: impl serde::Serialize) {
    key(out, name);
    let _ = serde_json::to_writer(&mut *out, &value);
}

/// A JSON string, escaped as serde_json escapes it; most need no escape and are copied.
fn string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

pub(super) fn open(sink: &Sink) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match sink {
        Sink::Stderr => Box::new(std::io::stderr()),
        Sink::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ),
    })
}

/// The writer thread: every [`WRITE_INTERVAL`] it takes what is queued (swapping the buffer
/// for the one it emptied last time), formats it and writes it in one go; reopens the file
/// when SIGHUP asked. Ends after the [`super::Audit`] is dropped, with what was left. Never
/// a wake-up per record: a request that woke a sleeping writer would pay a futex call, and
/// the writer one write per record (together ~10 µs of CPU per request at 16 in flight). A
/// pass that took a quarter of the queue or more is followed by the next at once, so that a
/// rate beyond one queue a tick is not dropped.
pub(super) fn write_lines(sink: &Sink, mut out: Box<dyn Write + Send>, queue: &Queue) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut records = Vec::with_capacity(QUEUE);
    let mut clock = Clock::new();
    loop {
        if records.len() < QUEUE / 4 {
            std::thread::sleep(WRITE_INTERVAL);
        }
        let closed = queue.closed.load(Ordering::Acquire);
        if queue.reopen.swap(false, Ordering::AcqRel) {
            match open(sink) {
                Ok(new) => {
                    out = new;
                    tracing::info!("SIGHUP: the audit log reopened");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "SIGHUP: the audit log could not be reopened; writing to the old file")
                }
            }
        }
        records.clear();
        std::mem::swap(&mut *queue.lock(), &mut records);
        clock.tick();
        for record in &records {
            record.write_to(&mut buf, &mut clock);
            if buf.len() >= 64 * 1024 {
                flush(&mut out, &mut buf);
            }
        }
        flush(&mut out, &mut buf);
        if closed {
            return;
        }
    }
}

fn flush(out: &mut Box<dyn Write + Send>, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    if let Err(e) = out.write_all(buf).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "audit log write failed");
    }
    buf.clear();
}

/// `2026-12-02T19:10:24.` for `secs` since the epoch (UTC), appended to `out`.
fn date_time(secs: u64, out: &mut Vec<u8>) {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Digits by hand: `format!` costs more than the rest of the line (years 0-9999).
    padded(out, year.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    padded(out, month as u64, 2);
    out.push(b'-');
    padded(out, day as u64, 2);
    out.push(b'T');
    padded(out, rest / 3600, 2);
    out.push(b':');
    padded(out, rest / 60 % 60, 2);
    out.push(b':');
    padded(out, rest % 60, 2);
    out.push(b'.');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that reads `system` at its own instant.
    fn clock_at(system: SystemTime) -> Clock {
        let mut clock = Clock::new();
        clock.system = system;
        clock
    }

    fn rfc3339(t: SystemTime) -> String {
        let mut clock = clock_at(t);
        let mut out = Vec::new();
        clock.rfc3339_millis(clock.instant, &mut out);
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_238_624_123);
        assert_eq!(rfc3339(t), "2026-12-02T19:10:24.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    /// The stamp kept for one second is not reused for the next, nor for an earlier one.
    #[test]
    fn the_kept_second_follows_each_request() {
        let mut clock =
            clock_at(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_238_624_999));
        let now = clock.instant;
        let mut line = |ago_ms: u64| {
            let mut out = Vec::new();
            clock.rfc3339_millis(now - std::time::Duration::from_millis(ago_ms), &mut out);
            String::from_utf8(out).expect("ASCII")
        };
        assert_eq!(line(0), "2026-12-02T19:10:24.999Z");
        assert_eq!(line(500), "2026-12-02T19:10:24.499Z");
        assert_eq!(line(1_000), "2026-12-02T19:10:23.999Z");
        assert_eq!(line(0), "2026-12-02T19:10:24.999Z");
        assert_eq!(line(86_400_000), "2026-12-01T19:10:24.999Z");
    }

    /// Every field in order, escaped, with the outcome's own fields; the line parses as JSON.
    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut text = super::super::Text::new();
        for value in [
            Some("r1"),
            Some("https://idp"),
            Some("al\"ice\n"),
            Some("default"),
            None,
            Some("echo"),
        ] {
            text.push(value);
        }
        let mut clock =
            clock_at(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_238_624_123));
        let started = clock.instant;
        let record = Record {
            started,
            duration: std::time::Duration::from_nanos(1_234_560),
            client: Some(std::net::IpAddr::from([10, 0, 0, 7])),
            era: "modern",
            method: Some("tools/call".into()),
            outcome: Outcome::Refused {
                status: 429,
                reason: "rate_limited",
            },
            request_bytes: 10,
            response_bytes: 20,
            text,
            arguments: serde_json::value::RawValue::from_string("{\n\"a\": 1}".into()).ok(),
        };
        let mut out = Vec::new();
        record.write_to(&mut out, &mut clock);
        let text = String::from_utf8(out).expect("UTF-8");
        assert!(
            text.ends_with("}\n") && text.matches('\n').count() == 1,
            "{text}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let order = [
            "time",
            "request_id",
            "client",
            "iss",
            "sub",
            "server",
            "transport",
            "era",
            "session",
            "method",
            "target",
            "outcome",
            "status",
            "reason",
            "duration_ms",
            "request_bytes",
            "response_bytes",
            "arguments",
        ];
        assert_eq!(
            line.as_object().map(|o| o.len()),
            Some(order.len()),
            "{text}"
        );
        let at: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).expect("key"))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
        assert_eq!(line["time"], "2026-12-02T19:10:24.123Z");
        assert_eq!(line["client"], "10.0.0.7");
        assert_eq!(line["transport"], "streamable");
        assert_eq!(line["sub"], "al\"ice\n");
        assert_eq!(line["session"], serde_json::Value::Null);
        assert_eq!(line["status"], 429);
        assert_eq!(line["duration_ms"], 1.235);
        assert_eq!(line["arguments"]["a"], 1);
    }
}
