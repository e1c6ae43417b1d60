//! One connection: its TLS handshake, the hyper connection (HTTP/1.1, or HTTP/2 by ALPN or
//! prior knowledge), and the timers hyper does not have in the form we need — the request
//! head must arrive within `header_read_timeout` of its first byte (of the accept, for the
//! first request), and a keep-alive connection with nothing in flight closes after
//! `idle_timeout`. (hyper's own header timer also runs while an HTTP/1.1 connection waits
//! idle, which would make the idle timeout the header timeout.) Each request's body is read
//! here, within `body_read_timeout` and `max_body_bytes`, before the router sees it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tls::Tls;
use super::{Refusals, Settings};
use crate::error::Error;
use crate::metrics::Refusal;

pub(super) type Builder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

/// hyper's smallest read buffer; a request head must fit in the buffer.
const MIN_READ_BUFFER: usize = 8192;

/// Streams at once on one HTTP/2 connection (a session-era client opens one per POST).
const MAX_CONCURRENT_STREAMS: u32 = 256;

pub(super) fn builder(settings: &Settings) -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Ours instead (see the module comment).
        .header_read_timeout(None)
        // A head that does not fit gets 431 (hyper's TooLarge).
        .max_buf_size(settings.max_header_bytes.max(MIN_READ_BUFFER));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    if settings.http2 {
        builder
    } else {
        builder.http1_only()
    }
}

/// What a connection's timers watch: requests in flight, when the connection went idle, and
/// when the head of the next request started arriving.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `born` + 1 when a request head started arriving; 0: none pending.
    head_since: AtomicU64,
    /// Milliseconds since `born` when the last request finished.
    idle_since: AtomicU64,
    /// An HTTP/2 connection: bytes while idle are pings and settings, not a new head.
    h2: AtomicBool,
    changed: Notify,
}

enum Expiry {
    Head,
    Idle,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            // The first head (after the TLS handshake) is due from the accept.
            head_since: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn begin(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        InFlight(self.clone())
    }

    /// Bytes arrived from the peer.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_since.store(self.now_ms() + 1, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// Resolves when the head or the idle timer runs out.
    async fn expired(&self, settings: &Settings) -> Expiry {
        loop {
            let changed = self.changed.notified();
            let due = if self.in_flight.load(Ordering::Acquire) > 0 {
                None
            } else {
                match self.head_since.load(Ordering::Acquire) {
                    0 => Some((
                        self.idle_since.load(Ordering::Acquire),
                        settings.idle_timeout,
                        Expiry::Idle,
                    )),
                    since => Some((since - 1, settings.header_read_timeout, Expiry::Head)),
                }
            };
            match due {
                None => changed.await,
                Some((since, timeout, expiry)) => {
                    let at = self.born + std::time::Duration::from_millis(since) + timeout;
                    if Instant::now() >= at {
                        return expiry;
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// One request in flight, until its response body is dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // A head timer armed while this request was in flight belongs to no head.
            a.head_since.store(0, Ordering::Release);
            a.changed.notify_one();
        }
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched<S> {
    io: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until it is dropped (an SSE
/// stream is a request in flight for as long as it is open).
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Everything one connection needs.
pub(super) struct Connection {
    pub(super) peer: SocketAddr,
    pub(super) app: Router,
    pub(super) settings: Arc<Settings>,
    pub(super) refusals: Arc<Refusals>,
    pub(super) builder: Arc<Builder>,
    pub(super) stop: CancellationToken,
}

impl Connection {
    pub(super) async fn run(self, tcp: TcpStream, tls: Option<Arc<Tls>>) {
        let activity = Arc::new(Activity::new());
        let io = Watched {
            io: tcp,
            activity: activity.clone(),
        };
        let Some(tls) = tls else {
            return self.serve(io, activity).await;
        };
        let handshake = tls.acceptor().accept(io);
        match tokio::time::timeout(self.settings.header_read_timeout, handshake).await {
            Ok(Ok(stream)) => self.serve(stream, activity).await,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                self.refusals.note(Refusal::TlsHandshake, self.peer);
            }
            Err(_) => self.refusals.note(Refusal::HeaderTimeout, self.peer),
        }
    }

    async fn serve<I>(self, io: I, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let context = Arc::new(Requests {
            peer: self.peer,
            app: self.app.clone(),
            settings: self.settings.clone(),
            refusals: self.refusals.clone(),
            activity: activity.clone(),
        });
        let service = hyper::service::service_fn(move |request| {
            let context = context.clone();
            async move { Ok::<_, Infallible>(context.handle(request).await) }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        self.classify(&*e);
                    }
                    return;
                }
                () = self.stop.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                expiry = activity.expired(&self.settings), if !closing => match expiry {
                    // Dropping the connection closes it: nothing was in flight.
                    Expiry::Head => {
                        self.refusals.note(Refusal::HeaderTimeout, self.peer);
                        return;
                    }
                    Expiry::Idle => {
                        self.refusals.note(Refusal::Idle, self.peer);
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                },
            }
        }
    }

    /// Counts what hyper refused (it already answered 431 or 400 where HTTP/1.1 allows).
    fn classify(&self, e: &(dyn std::error::Error + 'static)) {
        let Some(e) = e.downcast_ref::<hyper::Error>() else {
            return;
        };
        let refusal = if e.is_parse_too_large() {
            Refusal::HeaderTooLarge
        } else if e.is_parse() {
            Refusal::Malformed
        } else if e.is_timeout() {
            Refusal::HeaderTimeout
        } else {
            return;
        };
        self.refusals.note(refusal, self.peer);
    }
}

/// What each request on the connection needs.
struct Requests {
    peer: SocketAddr,
    app: Router,
    settings: Arc<Settings>,
    refusals: Arc<Refusals>,
    activity: Arc<Activity>,
}

impl Requests {
    async fn handle(&self, request: Request<Incoming>) -> Response<Tracked> {
        let in_flight = self.activity.begin(request.version() == Version::HTTP_2);
        let (mut parts, body) = request.into_parts();
        // The peer address, for the per-address rate limit (as axum's `ConnectInfo`).
        parts.extensions.insert(ConnectInfo(self.peer));
        // HTTP/2 names the host in `:authority`; the Host checks read `Host` (RFC 9113 §8.3.1).
        if parts.version == Version::HTTP_2
            && !parts.headers.contains_key(header::HOST)
            && let Some(host) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(header::HOST, host);
        }
        let response = match self.read_body(body).await {
            Ok(body) => {
                let request = Request::from_parts(parts, body);
                match self.app.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            Err((refusal, error)) => {
                self.refusals.note(refusal, self.peer);
                error.into_response()
            }
        };
        response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })
    }

    /// The whole body, within the size and time limits (every handler takes the body whole).
    async fn read_body(&self, body: Incoming) -> Result<Body, (Refusal, Error)> {
        if body.is_end_stream() {
            return Ok(Body::empty());
        }
        let max = self.settings.max_body_bytes;
        if body.size_hint().lower() > max as u64 {
            return Err((Refusal::BodyTooLarge, Error::BodyTooLarge));
        }
        let read = http_body_util::Limited::new(body, max).collect();
        match tokio::time::timeout(self.settings.body_read_timeout, read).await {
            Ok(Ok(collected)) => Ok(Body::from(collected.to_bytes())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err((Refusal::BodyTooLarge, Error::BodyTooLarge))
            }
            // The peer went away mid-body; nobody reads this answer.
            Ok(Err(_)) => Err((
                Refusal::Malformed,
                Error::BadRequest {
                    code: crate::protocol::PARSE_ERROR,
                    message: "the request body could not be read",
                },
            )),
            Err(_) => Err((Refusal::BodyTimeout, Error::BodyTimeout)),
        }
    }
}
