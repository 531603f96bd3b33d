//! The example functions' HTTP mode (`--serve`, what the Knative Services run): the real
//! guests serve under real wasmedge with the plugin, a preprocess -> detect -> alarm
//! workflow goes through three servers over HTTP, and bad requests get clear statuses
//! without taking a server down. Security (issue 16, point 7): an idle or trickling client
//! cannot hold the single-threaded server past its request deadline, the server listens
//! on loopback only unless told otherwise, and a caller cannot ask for a huge image.

use skylark_testkit::guest::wasmedge_command;
use skylark_testkit::{chain_id, free_port, wasm, Redis};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Sends raw `request` bytes and returns (status, body).
fn raw(port: u16, request: &[u8]) -> std::io::Result<(u16, String)> {
    raw_at("127.0.0.1", port, request, Duration::from_secs(60))
}

/// Like [`raw`], to `host`, waiting at most `timeout` for each read.
fn raw_at(
    host: &str,
    port: u16,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect((host, port))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(request)?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim_end().to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn post(port: u16, query: &str) -> (u16, serde_json::Value) {
    let (status, body) = raw(
        port,
        format!("POST /?{query} HTTP/1.1\r\nHost: fn\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .expect("HTTP exchange");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

/// A function serving on a fresh port, ready (health check answered) when returned.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start(module: &str, redis: &Redis) -> Server {
        Server::start_with(module, redis, &[])
    }

    /// Like [`Server::start`], with `SERVE_*` settings in the guest's environment
    /// (`wasmedge --env`, what a container's `env` becomes under crun).
    fn start_with(module: &str, redis: &Redis, guest_env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = wasmedge_command(&redis.url);
        for (k, v) in guest_env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        let child = cmd
            .arg(wasm(module))
            .args(["--serve", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmedge");
        let server = Server { port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = raw(port, b"GET /healthz HTTP/1.1\r\n\r\n") {
                assert_eq!(body, "ok");
                break;
            }
            assert!(Instant::now() < deadline, "{module} never served on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_workflow_runs_over_http() {
    let redis = Redis::start();
    let pre = Server::start("preprocess", &redis);
    let det = Server::start("detect", &redis);
    let alarm = Server::start("alarm", &redis);

    // Two chains through the same long-running servers.
    for seed in ["1", "2"] {
        let chain = chain_id("http");
        let (s, out) = post(pre.port, &format!("chain={chain}&size=65536&seed={seed}"));
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["bytes"], 65536);
        let (s, out) = post(det.port, &format!("chain={chain}"));
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["source"]["tier"], "local");
        let detections = out["detections"].as_u64().expect("detections");
        let (s, out) = post(alarm.port, &format!("chain={chain}&min-detections=1"));
        assert_eq!(s, 200, "{out}");
        assert_eq!(out["detections"].as_u64(), Some(detections));
        assert_eq!(out["alarm"], detections >= 1);
        let stored = redis.state(&format!("skylark:bundle:{chain}"));
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            ["alarm", "detect", "preprocess"]
        );
    }
}

#[test]
fn bad_requests_get_statuses_and_the_server_goes_on() {
    let redis = Redis::start();
    let det = Server::start("detect", &redis);

    let (s, out) = post(det.port, "size=1");
    assert_eq!(s, 400, "{out}");
    assert!(
        out["error"].as_str().unwrap_or("").contains("chain"),
        "{out}"
    );
    let (s, out) = post(det.port, "chain=a%3Ab");
    assert_eq!(s, 400, "{out}");
    let (s, out) = post(det.port, "chain=ok&colour=red");
    assert_eq!(s, 400, "{out}");
    // Nothing stored for this chain: the run fails, with the function's own message.
    let (s, out) = post(det.port, &format!("chain={}", chain_id("none")));
    assert_eq!(s, 500, "{out}");
    assert!(
        out["error"].as_str().unwrap_or("").contains("no bundle"),
        "{out}"
    );

    let (s, _) = raw(det.port, b"\x16\x03\x01 not http at all\r\n\r\n").expect("exchange");
    assert_eq!(s, 400);
    // A head that never ends: exactly the limit, so that the server has read all of it
    // when it answers (unread bytes would turn its close into a reset).
    let mut big = b"GET /?chain=x HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(16 * 1024, b'a');
    assert_eq!(raw(det.port, &big).expect("exchange").0, 431);
    let (s, _) = raw(det.port, b"DELETE / HTTP/1.1\r\n\r\n").expect("exchange");
    assert_eq!(s, 405);
    // A client that connects and goes away without a word.
    drop(TcpStream::connect(("127.0.0.1", det.port)).expect("connect"));

    // Still serving.
    let (s, body) = raw(det.port, b"GET /healthz HTTP/1.1\r\n\r\n").expect("exchange");
    assert_eq!((s, body.as_str()), (200, "ok"));
}

/// `runtimeclass/invoke-ksvc.sh` against three serving functions, with a `kubectl` on PATH
/// that answers `get ksvc` with their local URLs (the only part of a cluster the script
/// talks to besides the functions).
#[test]
fn invoke_ksvc_script_runs_the_workflow() {
    let redis = Redis::start();
    let servers = [
        ("preprocess", Server::start("preprocess", &redis)),
        ("detect", Server::start("detect", &redis)),
        ("alarm", Server::start("alarm", &redis)),
    ];
    let bin = std::env::temp_dir().join(format!("skylark-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&bin).expect("stub dir");
    let mut stub = String::from(
        "#!/bin/sh\n# get ksvc skylark-<step> -n skylark -o jsonpath=...\ncase \"$3\" in\n",
    );
    for (name, s) in &servers {
        stub.push_str(&format!(
            "  skylark-{name}) printf 'http://127.0.0.1:{}' ;;\n",
            s.port
        ));
    }
    stub.push_str("  *) echo \"unknown service $3\" >&2; exit 1 ;;\nesac\n");
    let kubectl = bin.join("kubectl");
    std::fs::write(&kubectl, stub).expect("write stub");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&kubectl)
        .status()
        .expect("chmod");

    let chain = chain_id("ksvc");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .arg(skylark_testkit::root().join("runtimeclass/invoke-ksvc.sh"))
        .arg(&chain)
        .env("PATH", path)
        .env("PREPROCESS_QUERY", "size=65536")
        .output()
        .expect("run invoke-ksvc.sh");
    let _ = std::fs::remove_dir_all(&bin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let functions: Vec<_> = lines.iter().map(|l| l["function"].clone()).collect();
    assert_eq!(functions, ["preprocess", "detect", "alarm"]);
    assert_eq!(lines[0]["bytes"], 65536);
    assert_eq!(lines[2]["chain"], chain.as_str());
    assert_eq!(
        redis
            .state(&format!("skylark:bundle:{chain}"))
            .keys()
            .collect::<Vec<_>>(),
        ["alarm", "detect", "preprocess"]
    );
}

/// Point 7 of issue 16: the server handles one connection at a time, so before the fix a
/// client that connected and sent nothing blocked it (and the health check) forever. Now
/// each connection has a deadline for its whole request: the idle client gets `408` and
/// the next request is answered; a client trickling a byte at a time is cut off at the
/// same deadline, not reset by every byte.
#[test]
fn an_idle_or_trickling_client_cannot_block_the_server() {
    let redis = Redis::start();
    let det = Server::start_with("detect", &redis, &[("SERVE_REQUEST_TIMEOUT_MS", "1000")]);

    // Connects and sends nothing, and keeps the connection open.
    let mut idle = TcpStream::connect(("127.0.0.1", det.port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let started = Instant::now();
    let (s, body) = raw_at(
        "127.0.0.1",
        det.port,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        Duration::from_secs(15),
    )
    .expect("the health check is answered while an idle client is connected");
    assert_eq!((s, body.as_str()), (200, "ok"));
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    let mut answer = String::new();
    idle.read_to_string(&mut answer)
        .expect("the idle client gets an answer");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("SERVE_REQUEST_TIMEOUT_MS"), "{answer}");

    // Sends the head one byte every 100 ms: 100 bytes would take 10 s.
    let port = det.port;
    let trickler = std::thread::spawn(move || -> String {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            return "connect failed".into();
        };
        let head = format!("GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(70));
        for b in head.bytes() {
            if c.write_all(&[b]).is_err() {
                break; // the server closed it: cut off
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_millis(300)); // let the trickler connect first
    let started = Instant::now();
    let (s, _) = raw_at(
        "127.0.0.1",
        det.port,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        Duration::from_secs(15),
    )
    .expect("the health check is answered while a client trickles");
    assert_eq!(s, 200);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let answer = trickler.join().expect("trickler");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408 "),
        "the trickling client was answered: {answer}"
    );
}

/// Point 7 of issue 16: without `SERVE_BIND` the server listens on 127.0.0.1 only (in a
/// pod: reachable by Knative's queue-proxy, not from other pods), so another loopback
/// address of the same host (127.0.0.2) is refused; `SERVE_BIND=0.0.0.0` opens it.
#[test]
fn listens_on_loopback_unless_told_otherwise() {
    let redis = Redis::start();
    let local = Server::start("detect", &redis);
    let other = raw_at(
        "127.0.0.2",
        local.port,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(other.is_err(), "reached through 127.0.0.2: {other:?}");
    let open = Server::start_with("detect", &redis, &[("SERVE_BIND", "0.0.0.0")]);
    let (s, _) = raw_at(
        "127.0.0.2",
        open.port,
        b"GET /healthz HTTP/1.1\r\n\r\n",
        Duration::from_secs(10),
    )
    .expect("SERVE_BIND=0.0.0.0 accepts other addresses");
    assert_eq!(s, 200);
}

/// Point 7 of issue 16: a caller asking `preprocess` for a 1 GiB image gets `413` with the
/// limit, at once, and nothing is computed or stored; `SERVE_MAX_SIZE` moves the limit.
#[test]
fn image_size_is_capped() {
    let redis = Redis::start();
    let pre = Server::start("preprocess", &redis);
    let chain = chain_id("huge");
    let started = Instant::now();
    let (s, out) = post(pre.port, &format!("chain={chain}&size=1073741824"));
    assert_eq!(s, 413, "{out}");
    assert!(
        out["error"]
            .as_str()
            .unwrap_or("")
            .contains("over this server's limit of 16777216 bytes (SERVE_MAX_SIZE)"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(redis.state(&format!("skylark:bundle:{chain}")).is_empty());

    let small = Server::start_with("preprocess", &redis, &[("SERVE_MAX_SIZE", "4096")]);
    let (s, out) = post(small.port, &format!("chain={chain}&size=8192"));
    assert_eq!(s, 413, "{out}");
    let (s, out) = post(small.port, &format!("chain={chain}&size=4096"));
    assert_eq!(s, 200, "{out}");
}
