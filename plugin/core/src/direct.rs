//! The calling thread's connection to a nearby store over plain TCP or a Unix socket,
//! with Skylark's own RESP2 reader (issue 14 point 4). redis-rs's blocking reader takes
//! 8 KiB per `recv` and copies every bulk string through its decoder's buffer: a 10 MiB
//! bundle cost about 1,300 system calls and two copies on the guest's thread. This one
//! reads a large bulk string straight into the vector that holds it (one copy, from the
//! kernel), small replies through a 64 KiB buffer, and bounds every reply: a header that
//! announces more than the request's bound fails the read before any of those bytes are
//! taken, and ends the connection ([`Direct::exceeded`]), as the runtime's connections do
//! (`reply_bound`).
//!
//! It speaks what the blocking path needs: `AUTH` and `SELECT` when connecting (no
//! `CLIENT SETINFO`, as for every Skylark connection), then requests and replies in
//! lockstep, through redis-rs's [`ConnectionLike`] so that commands and pipelines are
//! built and read as before. A `rediss://` store keeps redis-rs's connection (`store`).

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind, RedisError, RedisResult, Value,
};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Bytes read per `recv` into the buffer (a large bulk string bypasses it).
const BUFFER: usize = 64 << 10;

/// The deepest nesting of arrays a reply may have (Skylark's deepest: a transaction's
/// `EXEC` array holding a script's array holding an array).
const MAX_DEPTH: u32 = 8;

/// The longest line (a reply's type, length, simple value or error) accepted: well
/// within the buffer, so that a line too long is reported as such.
const MAX_LINE: usize = 32 << 10;

/// The capacity reserved up front for an array, whatever its header announces.
const MAX_ARRAY_HINT: usize = 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    /// Never raises `SIGPIPE` (whose default action would end the host process) on a
    /// connection the store closed: the standard library sends on a TCP socket with
    /// `MSG_NOSIGNAL`, but writes to a Unix socket with `write`, so that one is sent here.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => {
                use std::os::fd::AsRawFd;
                // SAFETY: the descriptor is open for as long as `s` lives, and `buf` is
                // valid for reads of `buf.len()` bytes.
                let n = unsafe {
                    libc::send(
                        s.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection (see the module docs).
pub struct Direct {
    stream: Stream,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    db: i64,
    open: bool,
    /// The most bytes the next reply may take.
    bound: u64,
    /// The bound a reply passed (the connection is closed then).
    exceeded: Option<u64>,
}

/// Whether `info` names a store this module connects to (plain TCP or a Unix socket).
pub fn supports(info: &ConnectionInfo) -> bool {
    matches!(
        info.addr(),
        ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_)
    )
}

fn protocol(detail: String) -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::InvalidData, detail))
}

impl Direct {
    /// Connects to the store `info` names within `connect_timeout` (each address of a host
    /// name in turn), with `timeout` on every later read and write, and authenticates and
    /// selects its database as `info` says. `None` for a TLS address.
    pub fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Option<RedisResult<Direct>> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => tcp(host, *port, connect_timeout).map(Stream::Tcp),
            ConnectionAddr::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
            _ => return None,
        };
        Some(stream.map_err(RedisError::from).and_then(|stream| {
            let mut conn = Direct {
                stream,
                buf: vec![0; BUFFER],
                start: 0,
                end: 0,
                db: info.redis_settings().db(),
                open: true,
                bound: u64::MAX,
                exceeded: None,
            };
            conn.set_timeouts(timeout)?;
            conn.handshake(info)?;
            Ok(conn)
        }))
    }

    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        let t = Some(timeout).filter(|t| !t.is_zero());
        match &self.stream {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    /// `AUTH` and `SELECT` as `info` asks, in one round trip.
    fn handshake(&mut self, info: &ConnectionInfo) -> RedisResult<()> {
        let settings = info.redis_settings();
        let mut pipe = redis::pipe();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            pipe.add_command(auth.arg(password).clone());
        }
        if settings.db() != 0 {
            pipe.cmd("SELECT").arg(settings.db());
        }
        if pipe.cmd_iter().next().is_none() {
            return Ok(());
        }
        let replies = self.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len())?;
        for reply in replies {
            reply.extract_error().map_err(|e| {
                if e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH") {
                    RedisError::from((
                        ErrorKind::AuthenticationFailed,
                        "authentication failed",
                        e.to_string(),
                    ))
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Bounds the replies that follow to `bound` bytes each (until set again).
    pub fn set_bound(&mut self, bound: u64) {
        self.bound = bound;
    }

    /// The bound a reply passed, if one did (the connection is closed then).
    pub fn exceeded(&self) -> Option<u64> {
        self.exceeded
    }

    /// Writes `bytes` (a request, or part of one) without reading.
    pub fn send_packed_command(&mut self, bytes: &[u8]) -> RedisResult<()> {
        if !self.open {
            return Err(closed());
        }
        self.stream
            .write_all(bytes)
            .map_err(|e| self.fail(e.into()))
    }

    /// Reads one reply.
    pub fn recv_response(&mut self) -> RedisResult<Value> {
        if !self.open {
            return Err(closed());
        }
        let mut budget = self.bound;
        self.value(0, &mut budget).map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: RedisError) -> RedisError {
        self.open = false;
        e
    }

    /// Reads more bytes into the buffer (moving the unread ones to its front first when
    /// it is full).
    fn fill(&mut self) -> RedisResult<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(RedisError::from(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the store closed the connection",
            )));
        }
        self.end += n;
        Ok(())
    }

    /// Takes `n` bytes of `budget` for the reply, or fails the read.
    fn spend(&mut self, budget: &mut u64, n: u64) -> RedisResult<()> {
        match budget.checked_sub(n) {
            Some(left) => {
                *budget = left;
                Ok(())
            }
            None => {
                self.exceeded = Some(self.bound);
                Err(RedisError::from((
                    ErrorKind::Client,
                    "reply too large",
                    format!("reply larger than {} bytes", self.bound),
                )))
            }
        }
    }

    /// The next line without its `\r\n`, as (type byte, rest); consumed.
    fn line(&mut self, budget: &mut u64) -> RedisResult<(u8, Vec<u8>)> {
        let mut searched = 0;
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(i) = unread[searched..].windows(2).position(|w| w == b"\r\n") {
                let at = searched + i;
                if at == 0 {
                    return Err(protocol("an empty reply line".into()));
                }
                let (kind, rest) = (unread[0], unread[1..at].to_vec());
                self.start += at + 2;
                self.spend(budget, at as u64 + 2)?;
                return Ok((kind, rest));
            }
            if unread.len() >= MAX_LINE {
                return Err(protocol(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            searched = unread.len().saturating_sub(1);
            self.fill()?;
        }
    }

    fn value(&mut self, depth: u32, budget: &mut u64) -> RedisResult<Value> {
        let (kind, rest) = self.line(budget)?;
        let number = |rest: &[u8]| -> RedisResult<i64> {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    protocol(format!(
                        "not a number in a reply: {:?}",
                        String::from_utf8_lossy(rest)
                    ))
                })
        };
        match kind {
            b'+' if rest == b"OK" => Ok(Value::Okay),
            b'+' => Ok(Value::SimpleString(
                String::from_utf8_lossy(&rest).into_owned(),
            )),
            b'-' => {
                // redis-rs's parser makes the error value (its type has no public
                // constructor): the line as it came.
                let mut line = Vec::with_capacity(rest.len() + 3);
                line.push(b'-');
                line.extend_from_slice(&rest);
                line.extend_from_slice(b"\r\n");
                redis::parse_redis_value(&line)
            }
            b':' => number(&rest).map(Value::Int),
            b'$' => match number(&rest)? {
                -1 => Ok(Value::Nil),
                n if n < 0 => Err(protocol(format!("a bulk string of length {n}"))),
                n => {
                    self.spend(budget, n as u64 + 2)?;
                    self.bulk(n as usize).map(Value::BulkString)
                }
            },
            b'*' => match number(&rest)? {
                -1 => Ok(Value::Nil),
                n if n < 0 => Err(protocol(format!("an array of length {n}"))),
                _ if depth >= MAX_DEPTH => {
                    Err(protocol(format!("arrays nested deeper than {MAX_DEPTH}")))
                }
                n => {
                    let n = n as usize;
                    let mut items = Vec::with_capacity(n.min(MAX_ARRAY_HINT));
                    for _ in 0..n {
                        items.push(self.value(depth + 1, budget)?);
                    }
                    Ok(Value::Array(items))
                }
            },
            other => Err(protocol(format!(
                "a reply of type {:?} (RESP2 expected)",
                other as char
            ))),
        }
    }

    /// A bulk string of `len` bytes and its `\r\n`: what the buffer holds of it, the rest
    /// read straight into the vector.
    fn bulk(&mut self, len: usize) -> RedisResult<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let have = (self.end - self.start).min(len);
        out.extend_from_slice(&self.buf[self.start..self.start + have]);
        self.start += have;
        if out.len() < len {
            let missing = (len - out.len()) as u64;
            (&mut self.stream).take(missing).read_to_end(&mut out)?;
            if out.len() < len {
                return Err(RedisError::from(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the store closed the connection inside a reply",
                )));
            }
        }
        while self.end - self.start < 2 {
            self.fill()?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(protocol("a bulk string not followed by \\r\\n".into()));
        }
        self.start += 2;
        Ok(out)
    }
}

fn closed() -> RedisError {
    RedisError::from(io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection was closed after a failed read",
    ))
}

/// A TCP connection to `host:port` within `timeout` per address, without Nagle's
/// algorithm (a request is written whole and waits for its reply).
fn tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port} resolves to no address"),
        )
    }))
}

impl ConnectionLike for Direct {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send_packed_command(cmd)?;
        self.recv_response()
    }

    /// As redis-rs's: the replies after the first `offset` ones; an error reply among
    /// those skipped (a command a transaction refused to queue) fails the request.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send_packed_command(cmd)?;
        let mut replies = Vec::with_capacity(count);
        let mut refused = None;
        for i in 0..offset + count {
            let reply = self.recv_response()?;
            if i < offset {
                if let Value::ServerError(_) = reply {
                    refused.get_or_insert(reply);
                }
            } else {
                replies.push(reply);
            }
        }
        match refused {
            Some(e) => Err(e
                .extract_error()
                .err()
                .unwrap_or_else(|| protocol("a refused command without its error".into()))),
            None => Ok(replies),
        }
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

/// The calling thread's connection: [`Direct`], or redis-rs's for a TLS store.
pub enum Link {
    Redis(redis::Connection),
    Direct(Direct),
}

impl Link {
    /// Writes `bytes` without reading.
    pub fn send_packed_command(&mut self, bytes: &[u8]) -> RedisResult<()> {
        match self {
            Link::Redis(c) => c.send_packed_command(bytes),
            Link::Direct(c) => c.send_packed_command(bytes),
        }
    }

    /// Reads one reply.
    pub fn recv_response(&mut self) -> RedisResult<Value> {
        match self {
            Link::Redis(c) => c.recv_response(),
            Link::Direct(c) => c.recv_response(),
        }
    }

    /// Bounds the replies that follow (a [`Direct`] link only: redis-rs's reads whole
    /// replies).
    pub fn set_bound(&mut self, bound: u64) {
        if let Link::Direct(c) = self {
            c.set_bound(bound);
        }
    }

    /// The bound a reply passed, if one did.
    pub fn exceeded(&self) -> Option<u64> {
        match self {
            Link::Redis(_) => None,
            Link::Direct(c) => c.exceeded(),
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Link::Redis(c) => c.req_packed_command(cmd),
            Link::Direct(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Link::Redis(c) => c.req_packed_commands(cmd, offset, count),
            Link::Direct(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Redis(c) => c.get_db(),
            Link::Direct(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Link::Redis(c) => c.check_connection(),
            Link::Direct(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Link::Redis(c) => c.is_open(),
            Link::Direct(c) => c.is_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A connection to a one-shot server that writes `reply` after reading a request.
    fn served(reply: Vec<u8>) -> Direct {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut request = [0u8; 256];
                let _ = s.read(&mut request);
                let _ = s.write_all(&reply);
            }
        });
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        Direct::connect(
            client.get_connection_info(),
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .expect("plain TCP")
        .expect("connect")
    }

    fn ask(conn: &mut Direct) -> RedisResult<Value> {
        conn.req_packed_command(b"*1\r\n$4\r\nPING\r\n")
    }

    #[test]
    fn replies_of_every_resp2_type_are_read() {
        let big = vec![7u8; 300 << 10];
        let mut reply = b"*6\r\n+OK\r\n+PONG\r\n:-42\r\n$-1\r\n*2\r\n$0\r\n\r\n*-1\r\n".to_vec();
        reply.extend_from_slice(format!("${}\r\n", big.len()).as_bytes());
        reply.extend_from_slice(&big);
        reply.extend_from_slice(b"\r\n");
        let mut conn = served(reply);
        assert_eq!(
            ask(&mut conn).expect("reply"),
            Value::Array(vec![
                Value::Okay,
                Value::SimpleString("PONG".into()),
                Value::Int(-42),
                Value::Nil,
                Value::Array(vec![Value::BulkString(vec![]), Value::Nil]),
                Value::BulkString(big),
            ])
        );
        assert!(conn.is_open());
    }

    #[test]
    fn names_and_large_values_in_turn_are_read_whole() {
        let mut reply = b"*10\r\n".to_vec();
        let mut expected = Vec::new();
        for i in 0..5u8 {
            let value = vec![i; 40 << 10];
            reply.extend_from_slice(format!("$2\r\nf{i}\r\n${}\r\n", value.len()).as_bytes());
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\n");
            expected.push(Value::BulkString(format!("f{i}").into_bytes()));
            expected.push(Value::BulkString(value));
        }
        let mut conn = served(reply);
        assert_eq!(ask(&mut conn).expect("reply"), Value::Array(expected));
    }

    #[test]
    fn an_error_reply_keeps_its_code() {
        let mut conn = served(b"-NOSCRIPT No matching script\r\n".to_vec());
        let e = ask(&mut conn)
            .expect("a reply")
            .extract_error()
            .expect_err("an error");
        assert_eq!(e.code(), Some("NOSCRIPT"));
        assert!(conn.is_open());
    }

    #[test]
    fn a_reply_over_its_bound_fails_before_its_bytes_are_read_and_closes() {
        let mut conn = served(b"$1000000000\r\n".to_vec());
        conn.set_bound(1 << 20);
        let e = ask(&mut conn).expect_err("over the bound");
        assert!(e.to_string().contains("larger than 1048576"), "{e}");
        assert_eq!(conn.exceeded(), Some(1 << 20));
        assert!(!conn.is_open());
        assert!(
            ask(&mut conn).is_err(),
            "a closed connection is not used again"
        );
    }

    #[test]
    fn malformed_replies_are_protocol_errors_not_panics() {
        for reply in [
            &b"$abc\r\n"[..],
            b"$-5\r\n",
            b"*-2\r\n",
            b"%1\r\n",
            b"$3\r\nabcXY",
            b"\r\n",
            b"*1000000000\r\n",
            &[b'+'; 40 << 10],
        ] {
            let mut conn = served(reply.to_vec());
            assert!(ask(&mut conn).is_err(), "{reply:?}");
            assert!(!conn.is_open(), "{reply:?}");
        }
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH as usize + 1);
        deep.extend_from_slice(b":1\r\n");
        let mut conn = served(deep);
        let e = ask(&mut conn).expect_err("too deep");
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }
}
