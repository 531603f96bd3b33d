//! HTTP mode of the example functions, for serving platforms such as Knative:
//! `<function> --serve [PORT]` (default: `$PORT`, else 8080) listens on
//! `$SERVE_BIND:PORT` (default `127.0.0.1`: only the pod itself, i.e. Knative's
//! queue-proxy, reaches it) and runs the function once per request.
//!
//! - `POST /?chain=ID&flag=value...` (or `GET`) runs the function as
//!   `<function> ID --flag value ...` would and answers `200` with its JSON line, `400`
//!   with `{"error":..}` for bad arguments, `500` for a failed run.
//! - `GET /healthz` answers `200 ok`.
//! - Anything else gets `404`/`405`; a malformed or oversized request head gets
//!   `400`/`431`, a `size` over `$SERVE_MAX_SIZE` gets `413`, a request not received
//!   completely within `$SERVE_REQUEST_TIMEOUT_MS` gets `408`, and the server goes on with
//!   the next connection.
//!
//! One request per connection (`Connection: close`), one connection at a time: the
//! function itself is single-threaded, so the platform must send one request at a time
//! (Knative: `containerConcurrency: 1`). Because of that, every connection has a deadline
//! for its whole request (head and body, however slowly it trickles in) and for the
//! answer: an idle or slow client holds the server for at most that long, never forever.
//! A request body is read (up to 1 MiB) and ignored: the functions take everything from
//! the query string. On `wasm32-wasip1` the listener is WasmEdge's socket extension;
//! elsewhere (host builds, unit tests) it is `std::net`.

use crate::cli::{parse, Args, CliError, Spec};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Largest accepted request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body read (and discarded) before answering.
pub const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 64;

/// Default of `SERVE_BIND`: loopback only, where Knative's queue-proxy (same pod) sends.
pub const DEFAULT_BIND: &str = "127.0.0.1";
/// Default of `SERVE_REQUEST_TIMEOUT_MS`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default of `SERVE_MAX_SIZE`: the largest `size` parameter a request may ask for.
pub const DEFAULT_MAX_SIZE: u64 = 16 << 20;

/// Settings of the HTTP mode, from the environment ([`Config::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (`SERVE_BIND`): `127.0.0.1` behind Knative's queue-proxy,
    /// `0.0.0.0` to be reachable from outside the pod.
    pub bind: String,
    /// Deadline for receiving a whole request, and again for sending the answer
    /// (`SERVE_REQUEST_TIMEOUT_MS`, at least 1).
    pub request_timeout: Duration,
    /// Largest value of a `size` query parameter (`SERVE_MAX_SIZE`); larger ones get `413`
    /// before the function runs.
    pub max_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: DEFAULT_BIND.into(),
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

impl Config {
    /// Reads `SERVE_BIND`, `SERVE_REQUEST_TIMEOUT_MS` and `SERVE_MAX_SIZE` through `var`
    /// (`std::env::var` in [`Config::from_env`]); unset ones keep their defaults.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let mut c = Config::default();
        if let Some(b) = var("SERVE_BIND") {
            let b = b.trim();
            if b.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("SERVE_BIND {b:?} is not an IP address"));
            }
            c.bind = b.to_string();
        }
        let number = |name: &str, min: u64| -> Result<Option<u64>, String> {
            match var(name) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n >= min => Ok(Some(n)),
                    _ => Err(format!("{name} {v:?} is not a whole number >= {min}")),
                },
            }
        };
        if let Some(ms) = number("SERVE_REQUEST_TIMEOUT_MS", 1)? {
            c.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("SERVE_MAX_SIZE", 0)? {
            c.max_size = n;
        }
        Ok(c)
    }

    /// [`Config::from_vars`] over the process environment (in WasmEdge: the guest's WASI
    /// environment, i.e. the container's `env` under crun, `--env` on the command line).
    pub fn from_env() -> Result<Config, String> {
        Config::from_vars(|k| std::env::var(k).ok())
    }
}

/// A connection whose reads and writes can be given a timeout (`SO_RCVTIMEO`,
/// `SO_SNDTIMEO`), so that [`handle`] can enforce its deadlines.
pub trait Timeouts {
    /// Sets the timeout of each following read.
    fn set_read_timeout(&mut self, d: Duration) -> std::io::Result<()>;
    /// Sets the timeout of each following write.
    fn set_write_timeout(&mut self, d: Duration) -> std::io::Result<()>;
}

/// A parsed request: what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// `Content-Length`, 0 if absent.
    pub body_len: usize,
}

/// A response: status code and JSON (or text) body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    fn json(status: u16, v: Value) -> Response {
        Response {
            status,
            body: v.to_string(),
        }
    }

    fn error(status: u16, msg: impl Into<String>) -> Response {
        Response::json(status, json!({ "error": msg.into() }))
    }

    /// The status line, headers and body as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            _ => "Internal Server Error",
        };
        let kind = if self.body.starts_with('{') {
            "application/json"
        } else {
            "text/plain"
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.status,
            self.body.len() + 1
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out.push(b'\n');
        out
    }
}

/// Why a request head could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// More bytes are needed.
    Partial,
    /// The head is larger than [`MAX_HEAD`].
    TooLarge,
    /// Not HTTP/1.x; the message says what is wrong.
    Malformed(String),
}

/// Parses a request head from the start of `buf`; returns the request and the head length.
pub fn parse_head(buf: &[u8]) -> Result<(Request, usize), HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Err(HeadError::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut body_len = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| HeadError::Malformed("bad content-length".into()))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::Malformed(
                "chunked request bodies are not accepted; send content-length".into(),
            ));
        }
    }
    Ok((
        Request {
            method,
            path: path.to_string(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            body_len,
        },
        len,
    ))
}

/// The command-line arguments a query stands for: the `chain` parameter first, then
/// `--name value` for every other parameter.
pub fn query_args(query: &[(String, String)]) -> Result<Vec<String>, String> {
    let mut chain = None;
    let mut args = Vec::new();
    for (k, v) in query {
        if k == "chain" {
            if chain.replace(v.clone()).is_some() {
                return Err("chain given twice".into());
            }
        } else if k.is_empty() || k.starts_with('-') {
            return Err(format!("bad parameter name {k:?}"));
        } else {
            args.push(format!("--{k}"));
            args.push(v.clone());
        }
    }
    let chain = chain.ok_or("missing the chain parameter (?chain=ID)")?;
    // `--` so that a chain id starting with '-' stays the positional argument.
    let mut out = args;
    out.push("--".into());
    out.push(chain);
    Ok(out)
}

/// The `413` answer when the request's `size` parameter is a number over `max_size`.
fn size_over_cap(req: &Request, max_size: u64) -> Option<Response> {
    let (_, v) = req.query.iter().find(|(k, _)| k == "size")?;
    let size = v.trim().parse::<u64>().ok()?;
    (size > max_size).then(|| {
        Response::error(
            413,
            format!("size {size} is over this server's limit of {max_size} bytes (SERVE_MAX_SIZE)"),
        )
    })
}

/// Answers one parsed request by running `run` when it is a run request.
pub fn route(
    spec: &Spec,
    config: &Config,
    run: &dyn Fn(&Args) -> Result<Value, String>,
    req: &Request,
) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/healthz") => Response {
            status: 200,
            body: "ok".into(),
        },
        ("GET" | "POST", "/") => {
            if let Some(refused) = size_over_cap(req, config.max_size) {
                return refused;
            }
            let args = match query_args(&req.query) {
                Ok(a) => a,
                Err(e) => return Response::error(400, format!("{e}; usage: {}", spec.usage)),
            };
            match parse(spec.flags, args) {
                Ok(args) if skylark_guest::validate_id(args.chain()).is_err() => Response::error(
                    400,
                    format!(
                        "chain id {:?} is not a valid id (A-Z a-z 0-9 . _ -, 1-128 bytes)",
                        args.chain()
                    ),
                ),
                Ok(args) => match run(&args) {
                    Ok(v) => Response::json(200, v),
                    Err(e) => Response::error(500, e),
                },
                Err(CliError::Help) => Response::error(400, format!("usage: {}", spec.usage)),
                Err(CliError::Usage(m)) => {
                    Response::error(400, format!("{m}; usage: {}", spec.usage))
                }
            }
        }
        (_, "/" | "/healthz") => Response::error(405, format!("{} is not allowed", req.method)),
        (_, path) => Response::error(404, format!("no route {path:?}; use /?chain=ID")),
    }
}

/// Reads one request from `conn` within `config.request_timeout`, answers it (within the
/// same time again) and returns the status sent (0: the client closed without a word).
pub fn handle<C: Read + Write + Timeouts>(
    spec: &Spec,
    config: &Config,
    run: &dyn Fn(&Args) -> Result<Value, String>,
    conn: &mut C,
) -> std::io::Result<u16> {
    let deadline = Instant::now() + config.request_timeout;
    let response = match read_request(conn, deadline) {
        Ok(Incoming::Closed) => return Ok(0), // connected and closed: a TCP probe
        Ok(Incoming::Request(req)) => route(spec, config, run, &req),
        Ok(Incoming::Refused(r)) => r,
        Err(e) if Instant::now() >= deadline || is_timeout(&e) => Response::error(
            408,
            format!(
                "request not received within {} ms (SERVE_REQUEST_TIMEOUT_MS)",
                config.request_timeout.as_millis()
            ),
        ),
        Err(e) => return Err(e),
    };
    conn.set_write_timeout(config.request_timeout)?;
    conn.write_all(&response.to_bytes())?;
    conn.flush()?;
    Ok(response.status)
}

/// What [`read_request`] got.
enum Incoming {
    /// The client closed the connection before sending anything.
    Closed,
    /// A complete request (head, and body read and discarded).
    Request(Request),
    /// A request that gets this error answer without running anything.
    Refused(Response),
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Reads with a timeout of what is left until `deadline` (a `TimedOut` error once it has
/// passed), so that a client trickling bytes cannot stretch the request past it.
fn read_until<C: Read + Timeouts>(
    conn: &mut C,
    buf: &mut [u8],
    deadline: Instant,
) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    // A zero timeout means "none" to the socket layer: never set less than 1 ms.
    conn.set_read_timeout(left.max(Duration::from_millis(1)))?;
    conn.read(buf)
}

fn read_request<C: Read + Timeouts>(conn: &mut C, deadline: Instant) -> std::io::Result<Incoming> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_until(conn, &mut chunk, deadline)?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(Incoming::Closed);
            }
            return Ok(Incoming::Refused(Response::error(
                400,
                "connection closed inside the request head",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Err(HeadError::Partial) => continue,
            Err(HeadError::TooLarge) => {
                return Ok(Incoming::Refused(Response::error(
                    431,
                    format!("request head over {MAX_HEAD} bytes"),
                )))
            }
            Err(HeadError::Malformed(m)) => return Ok(Incoming::Refused(Response::error(400, m))),
            Ok((req, head_len)) => {
                if req.body_len > MAX_BODY {
                    return Ok(Incoming::Refused(Response::error(
                        413,
                        format!("request body over {MAX_BODY} bytes"),
                    )));
                }
                let mut left = req.body_len.saturating_sub(buf.len() - head_len);
                while left > 0 {
                    let n = read_until(conn, &mut chunk[..left.min(4096)], deadline)?;
                    if n == 0 {
                        break;
                    }
                    left -= n;
                }
                return Ok(Incoming::Request(req));
            }
        }
    }
}

/// The port of `--serve [PORT]`: the given one, else `$PORT`, else 8080.
pub fn port(arg: Option<&str>) -> Result<u16, String> {
    let raw = arg
        .map(str::to_string)
        .or_else(|| std::env::var("PORT").ok())
        .unwrap_or_else(|| "8080".into());
    raw.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {raw:?} is not 1..=65535"))
}

/// Serves requests forever on `config.bind:port`; returns only if the listener cannot be
/// made.
pub fn serve(
    spec: &Spec,
    config: &Config,
    run: &dyn Fn(&Args) -> Result<Value, String>,
    port: u16,
) -> String {
    let listener = match listen(&config.bind, port) {
        Ok(l) => l,
        Err(e) => return format!("listening on {}:{port}: {e}", config.bind),
    };
    eprintln!(
        "{}: serving on {}:{port} (request timeout {} ms, max size {})",
        spec.name,
        config.bind,
        config.request_timeout.as_millis(),
        config.max_size
    );
    loop {
        match accept(&listener) {
            Ok(mut conn) => match handle(spec, config, run, &mut conn) {
                Ok(0) => {}
                Ok(status) => eprintln!("{}: answered {status}", spec.name),
                Err(e) => eprintln!("{}: connection dropped: {e}", spec.name),
            },
            Err(e) => eprintln!("{}: accept failed: {e}", spec.name),
        }
    }
}

fn bind_addr(bind: &str, port: u16) -> std::io::Result<std::net::SocketAddr> {
    bind.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{bind:?}: {e}"))
        })
}

#[cfg(target_os = "wasi")]
type Listener = wasmedge_wasi_socket::TcpListener;
#[cfg(target_os = "wasi")]
type Conn = wasmedge_wasi_socket::TcpStream;
#[cfg(target_os = "wasi")]
fn listen(bind: &str, port: u16) -> std::io::Result<Listener> {
    wasmedge_wasi_socket::TcpListener::bind(bind_addr(bind, port)?, false)
}
#[cfg(target_os = "wasi")]
fn accept(l: &Listener) -> std::io::Result<Conn> {
    l.accept(false).map(|(c, _)| c)
}
#[cfg(target_os = "wasi")]
impl Timeouts for Conn {
    fn set_read_timeout(&mut self, d: Duration) -> std::io::Result<()> {
        AsRef::<wasmedge_wasi_socket::socket::Socket>::as_ref(self).set_recv_timeout(Some(d))
    }
    fn set_write_timeout(&mut self, d: Duration) -> std::io::Result<()> {
        AsRef::<wasmedge_wasi_socket::socket::Socket>::as_ref(self).set_send_timeout(Some(d))
    }
}

#[cfg(not(target_os = "wasi"))]
type Listener = std::net::TcpListener;
#[cfg(not(target_os = "wasi"))]
type Conn = std::net::TcpStream;
#[cfg(not(target_os = "wasi"))]
fn listen(bind: &str, port: u16) -> std::io::Result<Listener> {
    std::net::TcpListener::bind(bind_addr(bind, port)?)
}
#[cfg(not(target_os = "wasi"))]
fn accept(l: &Listener) -> std::io::Result<Conn> {
    l.accept().map(|(c, _)| c)
}
#[cfg(not(target_os = "wasi"))]
impl Timeouts for Conn {
    fn set_read_timeout(&mut self, d: Duration) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, Some(d))
    }
    fn set_write_timeout(&mut self, d: Duration) -> std::io::Result<()> {
        std::net::TcpStream::set_write_timeout(self, Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        name: "echo",
        usage: "echo <chain_id> [--size N]",
        flags: &["size"],
    };

    fn echo(args: &Args) -> Result<Value, String> {
        let size: u64 = args.number("size", 1)?;
        if size == 0 {
            return Err("size 0 failed".into());
        }
        Ok(json!({"chain": args.chain(), "size": size}))
    }

    /// A connection that reads from a fixed input and collects what is written.
    struct Fake {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            // Hand out at most 7 bytes at a time to exercise partial heads.
            let n = buf.len().min(7);
            self.input.read(&mut buf[..n])
        }
    }

    impl Timeouts for Fake {
        fn set_read_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
        fn set_write_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn exchange(request: &[u8]) -> (u16, String) {
        let mut conn = Fake {
            input: std::io::Cursor::new(request.to_vec()),
            output: Vec::new(),
        };
        let status = handle(&SPEC, &Config::default(), &echo, &mut conn).unwrap();
        let text = String::from_utf8(conn.output).unwrap();
        assert!(
            status == 0 || text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{text}"
        );
        (status, text)
    }

    #[test]
    fn runs_the_function_from_the_query() {
        let (s, t) = exchange(
            b"POST /?chain=c%2D1&size=42 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(s, 200, "{t}");
        assert!(t.ends_with("{\"chain\":\"c-1\",\"size\":42}\n"), "{t}");
        assert!(t.contains("content-length: 26\r\n"), "{t}");
        let (s, _) = exchange(b"GET /?chain=-x HTTP/1.1\r\n\r\n");
        assert_eq!(s, 200);
        let (s, t) = exchange(b"GET /?chain=a%3Ab HTTP/1.1\r\n\r\n");
        assert_eq!(s, 400, "{t}");
    }

    #[test]
    fn bad_requests_get_clear_statuses() {
        assert_eq!(exchange(b"GET /healthz HTTP/1.1\r\n\r\n").0, 200);
        assert_eq!(exchange(b"").0, 0);
        let (s, t) = exchange(b"POST /?size=3 HTTP/1.1\r\n\r\n");
        assert_eq!(s, 400);
        assert!(t.contains("missing the chain parameter"), "{t}");
        let (s, t) = exchange(b"POST /?chain=c&colour=red HTTP/1.1\r\n\r\n");
        assert_eq!(s, 400);
        assert!(t.contains("unknown option --colour"), "{t}");
        let (s, t) = exchange(b"POST /?chain=c&size=0 HTTP/1.1\r\n\r\n");
        assert_eq!(s, 500);
        assert!(t.contains("size 0 failed"), "{t}");
        assert_eq!(exchange(b"DELETE / HTTP/1.1\r\n\r\n").0, 405);
        assert_eq!(exchange(b"GET /other HTTP/1.1\r\n\r\n").0, 404);
        assert_eq!(exchange(b"\x00\x01garbage\r\n\r\n").0, 400);
        assert_eq!(exchange(b"POST / HTTP/1.1\r\nHost").0, 400);
        let (s, _) = exchange(b"POST /?chain=c HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n");
        assert_eq!(s, 413);
        let (s, _) =
            exchange(b"POST /?chain=c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert_eq!(s, 400);
        let mut big = b"GET /?chain=c HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(&big).0, 431);
    }

    #[test]
    fn sizes_over_the_cap_are_refused_before_running() {
        let (s, t) = exchange(b"POST /?chain=c&size=16777216 HTTP/1.1\r\n\r\n");
        assert_eq!(s, 200, "{t}");
        let (s, t) = exchange(b"POST /?chain=c&size=1073741824 HTTP/1.1\r\n\r\n");
        assert_eq!(s, 413, "{t}");
        assert!(
            t.contains("over this server's limit of 16777216 bytes (SERVE_MAX_SIZE)"),
            "{t}"
        );
    }

    /// A client that sends `prefix` and then nothing: each read after it times out.
    struct Stalled {
        prefix: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Stalled {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.prefix.read(buf)? {
                0 => Err(std::io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Timeouts for Stalled {
        fn set_read_timeout(&mut self, d: Duration) -> std::io::Result<()> {
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_secs(5));
            Ok(())
        }
        fn set_write_timeout(&mut self, _: Duration) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_request_gets_408() {
        for prefix in [
            &b""[..],
            b"GET /healthz HT",
            b"POST /?chain=c HTTP/1.1\r\ncontent-length: 9\r\n\r\nab",
        ] {
            let mut conn = Stalled {
                prefix: std::io::Cursor::new(prefix.to_vec()),
                output: Vec::new(),
            };
            let status = handle(&SPEC, &Config::default(), &echo, &mut conn).unwrap();
            assert_eq!(status, 408);
            let text = String::from_utf8(conn.output).unwrap();
            assert!(text.contains("SERVE_REQUEST_TIMEOUT_MS"), "{text}");
        }
    }

    #[test]
    fn config_from_variables() {
        let none = |_: &str| None;
        assert_eq!(Config::from_vars(none), Ok(Config::default()));
        assert_eq!(Config::default().bind, "127.0.0.1");
        let vars = |k: &str| match k {
            "SERVE_BIND" => Some("0.0.0.0".to_string()),
            "SERVE_REQUEST_TIMEOUT_MS" => Some("250".to_string()),
            "SERVE_MAX_SIZE" => Some("1024".to_string()),
            _ => None,
        };
        let c = Config::from_vars(vars).unwrap();
        assert_eq!(
            (c.bind.as_str(), c.request_timeout, c.max_size),
            ("0.0.0.0", Duration::from_millis(250), 1024)
        );
        let bad = |k: &str| (k == "SERVE_BIND").then(|| "localhost:80".to_string());
        assert!(Config::from_vars(bad).unwrap_err().contains("SERVE_BIND"));
        let bad = |k: &str| (k == "SERVE_REQUEST_TIMEOUT_MS").then(|| "0".to_string());
        assert!(Config::from_vars(bad).unwrap_err().contains(">= 1"));
    }

    #[test]
    fn query_becomes_arguments() {
        let q = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        };
        assert_eq!(
            query_args(&q("size=3&chain=c&dest=sat-b")).unwrap(),
            ["--size", "3", "--dest", "sat-b", "--", "c"]
        );
        assert!(query_args(&q("chain=a&chain=b")).is_err());
        assert!(query_args(&q("chain=a&--x=1")).is_err());
    }

    #[test]
    fn port_choice() {
        assert_eq!(port(Some("9000")), Ok(9000));
        assert!(port(Some("0")).is_err());
        assert!(port(Some("http")).is_err());
    }
}
