//! The example functions' HTTP mode (`--serve`, what the Knative Services run): the real
//! guests serve under real wasmedge with the plugin, a preprocess -> detect -> alarm
//! workflow goes through three servers over HTTP, and bad requests get clear statuses
//! without taking a server down.

use skylark_testkit::{chain_id, free_port, Guest, Redis, Running};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends raw `request` bytes and returns (status, body).
fn raw(port: u16, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
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
    running: Option<Running>,
}

impl Server {
    fn start(module: &str, redis: &Redis) -> Server {
        let port = free_port();
        let running = Guest::new(module, &redis.url)
            .args(["--serve", &port.to_string()])
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, body)) = raw(port, b"GET /healthz HTTP/1.1\r\n\r\n") {
                assert_eq!(body, "ok");
                break;
            }
            assert!(Instant::now() < deadline, "{module} never served on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            port,
            running: Some(running),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.kill();
        }
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
