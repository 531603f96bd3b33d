//! A bound on the size of every reply read from a store (issue 16 point 4). The Redis
//! client (redis-rs) reads a reply whole, however large the store says it is; a hostile
//! store could answer a copy's script or a job claim with hundreds of MiB within the
//! call's deadline. Every async connection of a store therefore reads through
//! [`Bounded`], which follows the RESP framing of the bytes as they arrive ([`Scanner`])
//! and fails the read as soon as the reply being read would pass the bound that its
//! [`Budget`] allows: a bulk string's length is checked from its header, before its bytes
//! are read, and an aggregate's bytes as they come. The failed read ends the connection
//! (the store drops it and reports `reply larger than N bytes`).
//!
//! The bound of a reply is the largest bound among the requests in flight on the
//! connection ([`Budget::admit`]), at least the connection's base bound (replies to the
//! handshake, pub/sub messages). A request's bound comes from what it can legitimately
//! return (`store::Store::reply_bound`).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The error a [`Bounded`] read fails with (inside an `io::Error` of kind `InvalidData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTooLarge {
    /// The bound the reply passed, in bytes.
    pub limit: u64,
}

impl std::fmt::Display for ReplyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reply larger than {} bytes", self.limit)
    }
}

impl std::error::Error for ReplyTooLarge {}

/// What one connection may read: its base bound, the bounds of the requests in flight,
/// and the bound a reply passed, if one did.
#[derive(Debug)]
pub struct Budget {
    base: u64,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Bounds of the requests in flight (a handful at most: a small list).
    in_flight: Vec<u64>,
    exceeded: Option<ReplyTooLarge>,
}

impl Budget {
    /// A budget whose replies may be `base` bytes when no larger request is in flight.
    pub fn new(base: u64) -> Arc<Budget> {
        Arc::new(Budget {
            base,
            state: Mutex::new(BudgetState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // A poisoned lock only means a panic elsewhere while holding it; the state (a
        // list of numbers) is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a request whose reply may be `bound` bytes until the returned guard drops.
    pub fn admit(self: &Arc<Self>, bound: u64) -> Admitted {
        self.state().in_flight.push(bound);
        Admitted {
            budget: Arc::clone(self),
            bound,
        }
    }

    /// The bound of the reply read now.
    pub fn limit(&self) -> u64 {
        let state = self.state();
        state.in_flight.iter().copied().fold(self.base, u64::max)
    }

    /// The bound a reply passed on this connection, if one did.
    pub fn exceeded(&self) -> Option<ReplyTooLarge> {
        self.state().exceeded
    }

    fn record(&self, e: ReplyTooLarge) {
        self.state().exceeded.get_or_insert(e);
    }
}

/// A request admitted to a [`Budget`]; its bound counts while this lives.
#[derive(Debug)]
pub struct Admitted {
    budget: Arc<Budget>,
    bound: u64,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        if let Some(at) = state.in_flight.iter().position(|b| *b == self.bound) {
            state.in_flight.swap_remove(at);
        }
    }
}

/// Where the scanner is within the current element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Expecting an element's type byte.
    Type,
    /// In an element's header line (`kind` is its type byte); `number` is the decimal
    /// value read so far (lengths and counts), `negative` a leading `-`.
    Line {
        kind: u8,
        number: u64,
        negative: bool,
    },
    /// In a blob's payload and its closing CRLF: this many bytes left.
    Payload(u64),
}

/// Follows the RESP2/RESP3 framing of a byte stream and measures each top-level reply.
#[derive(Debug, Clone)]
pub struct Scanner {
    part: Part,
    /// Elements still needed to complete the current top-level reply (0: between replies).
    pending: u64,
    /// Bytes of the current top-level reply so far.
    used: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            part: Part::Type,
            pending: 0,
            used: 0,
        }
    }
}

/// The fewest bytes one element takes on the wire (`_\r\n`): an aggregate that announces
/// more elements than fit in the rest of the bound is refused at its header.
const MIN_ELEMENT: u64 = 3;

impl Scanner {
    /// Scans `bytes`, the next bytes of the stream, with replies bounded by `limit`; fails
    /// at the first byte (or header) that shows the current reply to be larger.
    pub fn scan(&mut self, bytes: &[u8], limit: u64) -> Result<(), ReplyTooLarge> {
        let too_large = ReplyTooLarge { limit };
        let mut i = 0;
        while i < bytes.len() {
            match self.part {
                Part::Payload(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    self.used += take;
                    i += take as usize;
                    if self.used > limit {
                        return Err(too_large);
                    }
                    if take == left {
                        self.part = Part::Type;
                        self.complete(1);
                    } else {
                        self.part = Part::Payload(left - take);
                    }
                }
                Part::Type => {
                    if self.pending == 0 {
                        self.pending = 1;
                        self.used = 0;
                    }
                    self.used += 1;
                    self.part = Part::Line {
                        kind: bytes[i],
                        number: 0,
                        negative: false,
                    };
                    i += 1;
                }
                Part::Line {
                    kind,
                    number,
                    negative,
                } => {
                    let b = bytes[i];
                    i += 1;
                    self.used += 1;
                    if self.used > limit {
                        return Err(too_large);
                    }
                    match b {
                        b'\n' => self.end_line(kind, number, negative, limit)?,
                        b'0'..=b'9' => {
                            // A number past the bound is refused at the end of its line
                            // anyway; saturating keeps it there.
                            let number = number
                                .saturating_mul(10)
                                .saturating_add(u64::from(b - b'0'));
                            self.part = Part::Line {
                                kind,
                                number,
                                negative,
                            };
                        }
                        b'-' if number == 0 => {
                            self.part = Part::Line {
                                kind,
                                number,
                                negative: true,
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The header line of an element of type `kind` ended.
    fn end_line(
        &mut self,
        kind: u8,
        n: u64,
        negative: bool,
        limit: u64,
    ) -> Result<(), ReplyTooLarge> {
        let too_large = ReplyTooLarge { limit };
        let room = limit - self.used;
        self.part = Part::Type;
        match kind {
            // Blobs: bulk string, blob error, verbatim string; `$-1` is a null.
            b'$' | b'!' | b'=' if !negative => {
                let payload = n.saturating_add(2);
                if payload > room {
                    return Err(too_large);
                }
                self.part = Part::Payload(payload);
            }
            // Aggregates: array, set, push (n elements), map (n pairs), attribute (n
            // pairs, then the value it annotates, which still takes this element's place).
            b'*' | b'~' | b'>' | b'%' | b'|' if !negative => {
                let elements = if matches!(kind, b'%' | b'|') {
                    n.saturating_mul(2)
                } else {
                    n
                };
                if elements.saturating_mul(MIN_ELEMENT) > room {
                    return Err(too_large);
                }
                self.pending = self.pending.saturating_add(elements);
                if kind != b'|' {
                    self.complete(1);
                }
            }
            // Simple strings, errors, integers, nulls, booleans, doubles, big numbers;
            // null blobs and aggregates; bytes that are no RESP (the client fails on them).
            _ => self.complete(1),
        }
        Ok(())
    }

    /// `n` elements of the current reply are complete.
    fn complete(&mut self, n: u64) {
        self.pending = self.pending.saturating_sub(n);
        if self.pending == 0 {
            self.used = 0;
        }
    }

    /// Whether the scanner is between top-level replies.
    pub fn between_replies(&self) -> bool {
        self.pending == 0 && self.part == Part::Type
    }
}

/// A stream whose reads are bounded by a [`Budget`]; writes pass through.
pub struct Bounded<S> {
    inner: S,
    budget: Arc<Budget>,
    scanner: Scanner,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, budget: Arc<Budget>) -> Bounded<S> {
        Bounded {
            inner,
            budget,
            scanner: Scanner::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.budget.exceeded() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let limit = this.budget.limit();
                match this.scanner.scan(&buf.filled()[before..], limit) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) => {
                        this.budget.record(e);
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)))
                    }
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `bytes` in chunks of `step` bytes.
    fn scan(bytes: &[u8], limit: u64, step: usize) -> Result<Scanner, ReplyTooLarge> {
        let mut s = Scanner::default();
        for chunk in bytes.chunks(step) {
            s.scan(chunk, limit)?;
        }
        Ok(s)
    }

    fn every_split(bytes: &[u8], limit: u64) -> Result<(), ReplyTooLarge> {
        for step in 1..=bytes.len() {
            let s = scan(bytes, limit, step)?;
            assert!(s.between_replies(), "step {step}: {s:?}");
        }
        Ok(())
    }

    #[test]
    fn replies_within_the_bound_pass_however_they_are_split() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":-12\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"$0\r\n\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$2\r\n\r\n\r\n",
            b"%1\r\n+k\r\n~2\r\n_\r\n#t\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
            b">2\r\n+message\r\n=7\r\ntxt:abc\r\n",
            b",1.5\r\n(12345\r\n!3\r\nerr\r\n",
        ];
        for r in replies {
            every_split(r, r.len() as u64).unwrap_or_else(|e| {
                panic!("{}: {e}", String::from_utf8_lossy(r));
            });
        }
        // One after another, each within the bound, even if together they are not.
        let all: Vec<u8> = replies.concat();
        let largest = replies.iter().map(|r| r.len()).max().unwrap_or(0) as u64;
        every_split(&all, largest).unwrap();
    }

    #[test]
    fn a_reply_one_byte_over_is_refused() {
        let r = b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n$2\r\nxy\r\n";
        assert!(every_split(r, r.len() as u64).is_ok());
        for step in 1..=r.len() {
            assert_eq!(
                scan(r, r.len() as u64 - 1, step).unwrap_err(),
                ReplyTooLarge {
                    limit: r.len() as u64 - 1
                }
            );
        }
    }

    #[test]
    fn a_huge_bulk_is_refused_at_its_header() {
        // 256 MiB announced: refused once the header line ends, no payload read.
        let mut s = Scanner::default();
        assert_eq!(
            s.scan(b"$268435456\r\n", 1 << 20),
            Err(ReplyTooLarge { limit: 1 << 20 })
        );
        // A number too long to be real saturates and is refused too.
        let mut s = Scanner::default();
        assert!(s.scan(b"$99999999999999999999999999\r\n", 1 << 20).is_err());
        // A header line that never ends counts against the bound.
        let mut s = Scanner::default();
        assert!(s.scan(&[b'+'; 2000], 1000).is_err());
    }

    #[test]
    fn an_aggregate_announcing_more_elements_than_fit_is_refused_at_its_header() {
        let mut s = Scanner::default();
        assert!(s.scan(b"*1000000\r\n", 1 << 20).is_err());
        let mut s = Scanner::default();
        assert!(s.scan(b"%200000\r\n", 1 << 20).is_err());
        // The elements arrive one by one: refused once their bytes pass the bound.
        let mut s = Scanner::default();
        s.scan(b"*1000\r\n", 64 * 1024).unwrap();
        let element = b"$1024\r\n"
            .iter()
            .chain(&[b'x'; 1026])
            .copied()
            .collect::<Vec<u8>>();
        let mut refused = None;
        for n in 0..1000 {
            if s.scan(&element, 64 * 1024).is_err() {
                refused = Some(n);
                break;
            }
        }
        // 7 header bytes, then 1033 per element: the 64th (index 63) would pass 64 KiB.
        assert_eq!(refused, Some(63), "refused after 64 KiB");
    }

    #[test]
    fn the_budget_allows_the_largest_request_in_flight() {
        let b = Budget::new(10);
        assert_eq!(b.limit(), 10);
        let big = b.admit(100);
        let small = b.admit(5);
        assert_eq!(b.limit(), 100);
        drop(big);
        assert_eq!(b.limit(), 10);
        drop(small);
        assert_eq!(b.limit(), 10);
        assert_eq!(b.exceeded(), None);
    }

    #[tokio::test]
    async fn a_bounded_stream_fails_the_read_and_stays_failed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let budget = Budget::new(16);
        let mut bounded = Bounded::new(client, Arc::clone(&budget));
        server.write_all(b"+OK\r\n$100\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let e = bounded.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "reply larger than 16 bytes");
        assert_eq!(budget.exceeded(), Some(ReplyTooLarge { limit: 16 }));
        assert!(bounded.read(&mut buf).await.is_err());
    }
}
