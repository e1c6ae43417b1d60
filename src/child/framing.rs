//! Newline framing of a child's stdout and stderr with a length limit that survives bad lines.

use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// One frame of a child's output.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame {
    Line(String),
    /// A line over the limit (discarded up to its newline).
    Oversized,
    /// A line that is not UTF-8 (discarded).
    NotUtf8,
}

/// `FramedRead` ends the stream after any decoder error, so `LinesCodec`'s recoverable errors
/// (an over-long line, which it discards up to the next newline; a line that is not UTF-8,
/// already consumed) are turned into frames here instead: one bad line must not end the session.
pub(super) struct BoundedLines(LinesCodec);

impl BoundedLines {
    pub(super) fn new(max: usize) -> Self {
        Self(LinesCodec::new_with_max_length(max))
    }

    fn map(r: Result<Option<String>, LinesCodecError>) -> Result<Option<Frame>, std::io::Error> {
        match r {
            Ok(line) => Ok(line.map(Frame::Line)),
            Err(LinesCodecError::MaxLineLengthExceeded) => Ok(Some(Frame::Oversized)),
            Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Ok(Some(Frame::NotUtf8))
            }
            Err(LinesCodecError::Io(e)) => Err(e),
        }
    }
}

impl Decoder for BoundedLines {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Self::map(self.0.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<Frame>, std::io::Error> {
        Self::map(self.0.decode_eof(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    /// A line just over the limit and a line that is not UTF-8 are dropped; the lines around
    /// them still arrive (bore's `very_long_frame`, through an in-memory pipe).
    #[tokio::test]
    async fn bad_lines_are_frames_not_the_end() {
        let (mut w, r) = tokio::io::duplex(1024);
        let mut frames = FramedRead::new(r, BoundedLines::new(8));
        w.write_all(b"ok\n123456789\n\xff\xfe\nlast\n")
            .await
            .expect("write");
        drop(w);
        let mut got = Vec::new();
        while let Some(frame) = frames.next().await {
            got.push(frame.expect("frame"));
        }
        assert_eq!(
            got,
            vec![
                Frame::Line("ok".into()),
                Frame::Oversized,
                Frame::NotUtf8,
                Frame::Line("last".into()),
            ]
        );
    }
}
