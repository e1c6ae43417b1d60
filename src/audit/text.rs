//! The strings of one audit line (request id, `iss`, `sub`, server, session, target), kept
//! inline in the record.
//!
//! A record crosses to the writer thread and is dropped there. Had it held the request's
//! `Arc`s (the principal's `iss` and `sub`, the server's name), each line would move their
//! reference counts' cache lines between the cores twice and free memory of the runtime's
//! arena from the writer; measured on 2 cores, that alone cost ~3% of `tput-1x16`. Copied
//! here (a `memcpy` of ~250 bytes), the writer frees nothing but a rare spill to the heap.

/// Bytes kept in the record itself (below 256: the length is a `u8`). An Entra ID issuer
/// (`https://login.microsoftonline.com/<tenant>/v2.0`, 77 bytes) and its subject, two UUIDs,
/// a server and a tool name fit; longer strings spill to the heap. A record this size
/// measured no slower than one of 150 bytes.
const INLINE: usize = 240;

/// The fields, in the order they are pushed.
pub(super) const REQUEST_ID: usize = 0;
pub(super) const ISS: usize = 1;
pub(super) const SUB: usize = 2;
pub(super) const SERVER: usize = 3;
pub(super) const SESSION: usize = 4;
pub(super) const TARGET: usize = 5;
const FIELDS: usize = 6;

#[derive(Clone)]
pub(super) struct Text {
    /// Where each field's bytes end.
    ends: [u32; FIELDS],
    /// Bit `i`: field `i` is present (`None` and `""` differ in the line: `null` and `""`).
    present: u8,
    /// Fields pushed so far.
    pushed: u8,
    bytes: Bytes,
}

#[derive(Clone)]
#[expect(
    clippy::large_enum_variant,
    reason = "inline is the point: the heap variant is the rare spill"
)]
enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, buf } => &buf[..usize::from(*len)],
            Self::Heap(v) => v,
        }
    }

    fn extend(&mut self, more: &[u8]) {
        match self {
            Self::Inline { len, buf } => {
                let at = usize::from(*len);
                match buf.get_mut(at..at + more.len()) {
                    Some(room) => {
                        room.copy_from_slice(more);
                        // At most INLINE (< 256): fits.
                        *len = (at + more.len()) as u8;
                    }
                    None => {
                        let mut v = Vec::with_capacity(at + more.len() + 64);
                        v.extend_from_slice(&buf[..at]);
                        v.extend_from_slice(more);
                        *self = Self::Heap(v);
                    }
                }
            }
            Self::Heap(v) => v.extend_from_slice(more),
        }
    }
}

impl Text {
    pub(super) fn new() -> Self {
        Self {
            ends: [0; FIELDS],
            present: 0,
            pushed: 0,
            bytes: Bytes::Inline {
                len: 0,
                buf: [0; INLINE],
            },
        }
    }

    /// Appends the next field (they are pushed in the order of the constants above).
    pub(super) fn push(&mut self, value: Option<&str>) {
        let field = usize::from(self.pushed);
        if field >= FIELDS {
            return;
        }
        if let Some(value) = value {
            self.bytes.extend(value.as_bytes());
            self.present |= 1 << field;
        }
        self.ends[field] = u32::try_from(self.bytes.as_slice().len()).unwrap_or(u32::MAX);
        self.pushed += 1;
    }

    pub(super) fn get(&self, field: usize) -> Option<&str> {
        if field >= usize::from(self.pushed) || self.present & (1 << field) == 0 {
            return None;
        }
        let start = if field == 0 { 0 } else { self.ends[field - 1] };
        let bytes = self
            .bytes
            .as_slice()
            .get(start as usize..self.ends[field] as usize)?;
        // Always whole `&str`s: cut only where one ended.
        std::str::from_utf8(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_as_pushed_inline_or_spilled() {
        let long = "é".repeat(200);
        for sub in ["alice", long.as_str()] {
            let mut text = Text::new();
            text.push(Some("r1"));
            text.push(None);
            text.push(Some(sub));
            text.push(Some(""));
            text.push(Some("ab12"));
            let context = text.clone();
            text.push(Some("echo"));
            assert_eq!(text.get(REQUEST_ID), Some("r1"));
            assert_eq!(text.get(ISS), None);
            assert_eq!(text.get(SUB), Some(sub));
            assert_eq!(text.get(SERVER), Some(""));
            assert_eq!(text.get(SESSION), Some("ab12"));
            assert_eq!(text.get(TARGET), Some("echo"));
            assert_eq!(context.get(TARGET), None, "not pushed on the copy");
            assert_eq!(
                matches!(text.bytes, Bytes::Heap(_)),
                sub.len() > INLINE,
                "spills only when it must"
            );
        }
    }
}
