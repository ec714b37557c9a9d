//! A TCP (or TLS) stream whose reads and writes fail after a deadline without progress.
//!
//! async-imap has no per-command timeouts, so the limits live on the stream itself: a read
//! or write that stays pending for longer than its limit fails with
//! [`std::io::ErrorKind::TimedOut`], async-imap turns that into an error, and the session is
//! thrown away. The read limit can be changed while the stream is in use (IDLE waits longer
//! than a normal command) through a [`TimeoutHandle`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// Shared, adjustable read and write limits of a [`TimeoutStream`], and the session's note
/// that the server announced a change of the selected mailbox.
#[derive(Clone, Debug)]
pub struct TimeoutHandle {
    limits: Arc<Limits>,
}

#[derive(Debug)]
struct Limits {
    read_ms: AtomicU64,
    write_ms: AtomicU64,
    /// A change (`EXISTS`, `EXPUNGE`, ...) was announced in the answer of a command that
    /// does not look for it: the next wait must not go into IDLE, where the server would not
    /// announce it again.
    changed: AtomicBool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl TimeoutHandle {
    /// Limits for reads and writes.
    pub fn new(read: Duration, write: Duration) -> Self {
        Self {
            limits: Arc::new(Limits {
                read_ms: AtomicU64::new(millis(read)),
                write_ms: AtomicU64::new(millis(write)),
                changed: AtomicBool::new(false),
            }),
        }
    }

    /// The current read limit.
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.read_ms.load(Ordering::Relaxed))
    }

    /// The current write limit.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.write_ms.load(Ordering::Relaxed))
    }

    /// Changes the read limit for reads that start from now on.
    pub fn set_read_timeout(&self, d: Duration) {
        self.limits.read_ms.store(millis(d), Ordering::Relaxed);
    }

    /// Notes that the server announced a change of the selected mailbox.
    pub(crate) fn note_change(&self) {
        self.limits.changed.store(true, Ordering::Relaxed);
    }

    /// Whether a change was announced since the last call.
    pub(crate) fn take_change(&self) -> bool {
        self.limits.changed.swap(false, Ordering::Relaxed)
    }
}

/// A stream whose pending reads and writes fail with `TimedOut` after their limits.
pub struct TimeoutStream<S> {
    inner: S,
    handle: TimeoutHandle,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> TimeoutStream<S> {
    /// Wraps `inner` with the limits of `handle`.
    pub fn new(inner: S, handle: TimeoutHandle) -> Self {
        Self { inner, handle, read_timer: None, write_timer: None }
    }
}

impl<S> fmt::Debug for TimeoutStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutStream").field("handle", &self.handle).finish_non_exhaustive()
    }
}

fn check_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    what: &str,
    cx: &mut Context<'_>,
) -> Poll<io::Error> {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => {
            *timer = None;
            Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{what} made no progress for {limit:?}"),
            ))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TimeoutStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = this.handle.read_timeout();
                check_timer(&mut this.read_timer, limit, "read", cx).map(Err)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> TimeoutStream<S> {
    fn after_write<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.write_timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.handle.write_timeout();
                check_timer(&mut self.write_timer, limit, "write", cx).map(Err)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimeoutStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(r, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.after_write(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.after_write(r, cx)
    }
}

/// The transport of an IMAP session: plaintext or TLS over a [`TimeoutStream`].
pub enum MailStream {
    /// No TLS (loopback only).
    Plain(TimeoutStream<TcpStream>),
    /// TLS (implicit or after STARTTLS).
    Tls(Box<tokio_rustls::client::TlsStream<TimeoutStream<TcpStream>>>),
}

impl MailStream {
    /// The limits (and change note) of the connection under it.
    pub(crate) fn handle(&self) -> &TimeoutHandle {
        match self {
            MailStream::Plain(s) => &s.handle,
            MailStream::Tls(s) => &s.get_ref().0.handle,
        }
    }
}

impl fmt::Debug for MailStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailStream::Plain(_) => f.write_str("MailStream::Plain"),
            MailStream::Tls(_) => f.write_str("MailStream::Tls"),
        }
    }
}

impl AsyncRead for MailStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_read_that_makes_no_progress_fails_after_its_limit() {
        let (client, _server) = tokio::io::duplex(64);
        let mut s = TimeoutStream::new(
            client,
            TimeoutHandle::new(Duration::from_secs(60), Duration::from_secs(60)),
        );
        let started = tokio::time::Instant::now();
        let mut buf = [0u8; 8];
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn data_resets_the_read_limit_and_the_limit_can_be_raised() {
        let (client, mut server) = tokio::io::duplex(64);
        let handle = TimeoutHandle::new(Duration::from_secs(10), Duration::from_secs(10));
        let mut s = TimeoutStream::new(client, handle.clone());
        server.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        s.read_exact(&mut buf).await.unwrap();
        handle.set_read_timeout(Duration::from_secs(300));
        let started = tokio::time::Instant::now();
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_peer_that_reads_nothing_fails_after_its_limit() {
        let (client, _server) = tokio::io::duplex(4);
        let mut s = TimeoutStream::new(
            client,
            TimeoutHandle::new(Duration::from_secs(60), Duration::from_secs(5)),
        );
        let err = s.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
