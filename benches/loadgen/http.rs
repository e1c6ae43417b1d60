//! A lean HTTP/1.1 client for the load generator: one hyper connection per lane (no pool, no
//! redirects; TLS for `tls://` addresses), `TCP_NODELAY` on, and an incremental Server-Sent
//! Events parser.
//! The client's own cost is part of every measured figure, so it is kept small and the same
//! for every target.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Every request and every wait for a stream event is bounded by this.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP/1.1 connection (keep-alive), used by one lane at a time.
pub(crate) struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub(crate) async fn open(addr: &str) -> Result<Conn> {
        let (tls, addr) = match addr.strip_prefix(crate::tls::SCHEME) {
            Some(a) => (true, a),
            None => (false, addr),
        };
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")?
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let send = if tls {
            let connector = crate::tls::client().context("TLS target without tls::setup")?;
            let name = rustls_pki_types::ServerName::IpAddress(
                addr.parse::<std::net::SocketAddr>()?.ip().into(),
            );
            let stream = tokio::time::timeout(IO_TIMEOUT, connector.connect(name, stream))
                .await
                .context("TLS handshake timed out")??;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            send
        };
        Ok(Conn {
            send,
            host: addr.to_owned(),
        })
    }

    /// Sends a request; returns the response head and its (unread) body.
    pub(crate) async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Response<Incoming>> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.host);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(body))?;
        tokio::time::timeout(IO_TIMEOUT, async {
            self.send.ready().await?;
            self.send.send_request(request).await
        })
        .await
        .context("request timed out")?
        .context("request failed")
    }
}

/// Reads a whole (small) body.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes> {
    let collected = tokio::time::timeout(IO_TIMEOUT, body.collect())
        .await
        .context("body timed out")??;
    Ok(collected.to_bytes())
}

/// One Server-Sent Event (`event` defaults to `message`; comments are skipped).
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) data: Bytes,
}

/// Incremental SSE parsing over a streaming response body.
pub(crate) struct SseReader {
    body: Incoming,
    buf: BytesMut,
}

impl SseReader {
    pub(crate) fn new(body: Incoming) -> SseReader {
        SseReader {
            body,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// The next event, `Ok(None)` at the end of the stream. Waits up to `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Result<Option<SseEvent>> {
        tokio::time::timeout(wait, self.next_inner())
            .await
            .map_err(|_| anyhow!("no SSE event within {wait:?}"))?
    }

    async fn next_inner(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.take_event()? {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(None),
            }
        }
    }

    /// Parses one complete event out of the buffer, if there is one. Handles `\n` and
    /// `\r\n` line ends; a blank line ends an event.
    fn take_event(&mut self) -> Result<Option<SseEvent>> {
        loop {
            let Some((end, sep)) = find_blank_line(&self.buf) else {
                if self.buf.len() > 64 * 1024 * 1024 {
                    bail!("SSE event over 64 MiB");
                }
                return Ok(None);
            };
            let block = self.buf.split_to(end).freeze();
            self.buf.advance(sep);
            let mut event = String::from("message");
            let mut data: Option<BytesMut> = None;
            let mut single: Option<Bytes> = None;
            for line in block.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(v) = line.strip_prefix(b"data:") {
                    let v = v.strip_prefix(b" ").unwrap_or(v);
                    match (&mut data, &single) {
                        (None, None) => single = Some(block.slice_ref(v)),
                        (None, Some(first)) => {
                            let mut joined = BytesMut::from(&first[..]);
                            joined.extend_from_slice(b"\n");
                            joined.extend_from_slice(v);
                            data = Some(joined);
                        }
                        (Some(joined), _) => {
                            joined.extend_from_slice(b"\n");
                            joined.extend_from_slice(v);
                        }
                    }
                } else if let Some(v) = line.strip_prefix(b"event:") {
                    let v = v.strip_prefix(b" ").unwrap_or(v);
                    event = String::from_utf8_lossy(v).into_owned();
                }
            }
            let data = match (data, single) {
                (Some(joined), _) => joined.freeze(),
                (None, Some(one)) => one,
                (None, None) => continue, // a comment or keep-alive
            };
            return Ok(Some(SseEvent { event, data }));
        }
    }
}

/// The end of the first event in `buf` and the length of the blank-line separator.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = memchr(b'\n', &buf[i..]) {
        let nl = i + pos;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some((nl, 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, 3));
        }
        i = nl + 1;
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn blank_lines() {
        assert_eq!(super::find_blank_line(b"data: x\n\nrest"), Some((7, 2)));
        assert_eq!(super::find_blank_line(b"data: x\r\n\r\n"), Some((8, 3)));
        assert_eq!(super::find_blank_line(b"data: x\n"), None);
    }
}
