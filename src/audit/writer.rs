//! The writer thread of the audit log: formats the records it is handed and writes them in
//! batches, reopening the file on SIGHUP.

use std::io::Write;
use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::value::RawValue;

use super::{Message, Outcome, Record, Sink, WRITE_INTERVAL};

/// One line as written (field order is the order of the struct).
#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    request_id: &'a str,
    client: Option<IpAddr>,
    iss: Option<&'a str>,
    sub: Option<&'a str>,
    server: &'a str,
    transport: &'a str,
    era: &'a str,
    session: Option<&'a str>,
    method: Option<&'a str>,
    target: Option<&'a str>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    duration_ms: f64,
    request_bytes: usize,
    response_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a RawValue>,
}

impl Record {
    fn write_to(&self, out: &mut Vec<u8>) {
        let c = &self.context;
        let time = rfc3339_millis(self.time);
        let (outcome, error_code, status, reason) = match self.outcome {
            Outcome::Ok => ("ok", None, None, None),
            Outcome::Error(code) => ("error", Some(code), None, None),
            Outcome::Denied => ("denied", None, None, None),
            Outcome::Cancelled => ("cancelled", None, None, None),
            Outcome::Refused { status, reason } => ("refused", None, Some(status), Some(reason)),
        };
        let line = Line {
            time: &time,
            request_id: &c.request_id,
            client: c.client,
            iss: c.iss.as_deref(),
            sub: c.sub.as_deref(),
            server: &c.server,
            transport: c.transport,
            era: c.era,
            session: c.session.as_deref(),
            method: self.method.as_deref(),
            target: self.target.as_deref(),
            outcome,
            error_code,
            status,
            reason,
            duration_ms: (self.duration_ms * 1000.0).round() / 1000.0,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            arguments: self.arguments.as_deref(),
        };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
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

/// The writer thread: every [`WRITE_INTERVAL`] it takes what is queued, formats it and
/// writes it in one go; reopens the file on [`Message::Reopen`]. Ends when every sender is
/// gone. It never blocks in the channel: a sender that finds a receiver asleep in `recv` pays
/// a wake-up (a futex syscall) per record, and the writer one write per record — together
/// about 10 µs of CPU per request at 16 in flight, where a tick costs nothing per record.
pub(super) fn write_lines(
    sink: &Sink,
    mut out: Box<dyn Write + Send>,
    rx: &std::sync::mpsc::Receiver<Message>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        std::thread::sleep(WRITE_INTERVAL);
        loop {
            match rx.try_recv() {
                Ok(Message::Record(record)) => record.write_to(&mut buf),
                Ok(Message::Reopen) => {
                    flush(&mut out, &mut buf);
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
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    flush(&mut out, &mut buf);
                    return;
                }
            }
            if buf.len() >= 64 * 1024 {
                flush(&mut out, &mut buf);
            }
        }
        flush(&mut out, &mut buf);
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

/// `2026-12-02T19:10:24.123Z` (RFC 3339, UTC, milliseconds).
fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
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
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_238_624_123);
        assert_eq!(rfc3339_millis(t), "2026-12-02T19:10:24.123Z");
        assert_eq!(
            rfc3339_millis(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
