//! Skylark functions in Kubernetes pods, with containerd driven through its CRI API as a
//! kubelet drives it (`skylark_cri_tests::kubelet`): a private containerd 1.7 (Debian
//! trixie's) with the runtime handler `crun` (trixie's crun 1.21, its WasmEdge handler),
//! the images built by `oci-image`, the real plugin mounted from the host, real
//! redis-server. Checked, for the handler `crun` (pods annotated
//! `module.wasm.image/variant: compat-smart`) and for the handler `skylark`
//! (`containerd-shim-skylark-v1` from `shim/`, no annotation):
//! - the probe guest's put and then get, in two pods (their logs, and the key in Redis);
//! - `preprocess --serve` in a pod answering HTTP and storing its state;
//! - controls that must fail: a wrong `WASMEDGE_PLUGIN_PATH` (the module's `skylark`
//!   imports stay unresolved), and for crun a pod without the annotation (crun runs the
//!   module as a native program: exec format error).
//!
//! Where the machine cannot run it (not root, no network for the packages...) the test
//! skips with the reason; in CI (`CI=true`) that is a failure unless `SKYLARK_SKIP_CRI`
//! names why this CI machine may skip.

use serde_json::Value;
use skylark_cri_tests::containerd::{Containerd, HANDLER, SHIM_HANDLER};
use skylark_cri_tests::images::{self, PREPROCESS, PROBE};
use skylark_cri_tests::kubelet::{ContainerSpec, Kubelet, PodSpec};
use skylark_cri_tests::machine::{verdict, Machine, Verdict};
use skylark_cri_tests::Error;
use skylark_testkit::{chain_id, plugin_dir, root, wasm, Redis};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const PLUGIN_IN_POD: &str = "/opt/skylark/plugin";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment every function container gets (as the manifests set it).
fn function_env(redis: &Redis, plugin_path: &str) -> Vec<(String, String)> {
    vec![
        ("WASMEDGE_PLUGIN_PATH".into(), plugin_path.into()),
        ("SKYLARK_REDIS_URL".into(), redis.url.clone()),
        ("SKYLARK_NODE_NAME".into(), "cri-node".into()),
    ]
}

fn probe(name: &str, args: &[&str], redis: &Redis, plugin_path: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: PROBE.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: function_env(redis, plugin_path),
        mounts: vec![(plugin_dir(), PLUGIN_IN_POD.into())],
    }
}

fn pod(name: &str, handler: &str, wasm_annotation: bool) -> PodSpec {
    PodSpec {
        name: name.into(),
        handler: handler.into(),
        wasm_annotation,
    }
}

/// The JSON line of the guest's output that has `"op": op`.
fn op_line(log: &str, op: &str) -> Option<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v["op"] == op)
}

/// What a run-to-completion pod ended with.
struct Run {
    started: Result<(), String>,
    exit_code: Option<i32>,
    message: String,
    log: String,
}

/// One pod with one container that runs to its end, through the whole kubelet cycle.
async fn run_pod(k: &mut Kubelet, pod_spec: &PodSpec, c: &ContainerSpec) -> Run {
    let pod = k.run_pod(pod_spec).await.expect("RunPodSandbox");
    let container = k.start_container(&pod, c).await.expect("CreateContainer");
    let exited = match &container.started {
        Ok(()) => Some(
            k.wait_exited(&container, RUN_TIMEOUT)
                .await
                .expect("container exits"),
        ),
        Err(_) => None,
    };
    let log = k.log(&container);
    k.stop_remove_container(&container, 10)
        .await
        .expect("StopContainer, RemoveContainer");
    k.stop_remove_pod(&pod)
        .await
        .expect("StopPodSandbox, RemovePodSandbox");
    Run {
        started: container.started.clone(),
        exit_code: exited.as_ref().map(|e| e.exit_code),
        message: exited
            .map(|e| format!("{} {}", e.reason, e.message))
            .unwrap_or_default(),
        log,
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status code, body).
fn http(port: u16, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((code, body))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The probe's put and then get, each in a pod of `handler` (annotated if `annotate`);
/// the put's pod has `WASMEDGE_PLUGIN_PATH=put_plugin_path`.
async fn put_and_get(
    k: &mut Kubelet,
    redis: &Redis,
    handler: &str,
    annotate: bool,
    put_plugin_path: &str,
) {
    let chain = chain_id("cri");
    let run = run_pod(
        k,
        &pod("probe-put", handler, annotate),
        &probe(
            "probe",
            &["put", &chain, "cri", "4096", "7"],
            redis,
            put_plugin_path,
        ),
    )
    .await;
    assert_eq!(run.started, Ok(()), "StartContainer refused the put");
    let put = op_line(&run.log, "put")
        .unwrap_or_else(|| panic!("no put line in the pod's log: {}\n{}", run.log, run.message));
    assert_eq!(put["status"], 0, "the put failed in the pod: {put}");
    assert_eq!(run.exit_code, Some(0), "put container: {}", run.message);
    let stored = redis.hgetall(&format!("skylark:bundle:{chain}"));
    assert!(
        stored.contains_key("cri"),
        "the put reported success but skylark:bundle:{chain} has no field 'cri': {:?}",
        stored.keys()
    );

    let run = run_pod(
        k,
        &pod("probe-get", handler, annotate),
        &probe("probe", &["get", &chain], redis, PLUGIN_IN_POD),
    )
    .await;
    let get = op_line(&run.log, "get")
        .unwrap_or_else(|| panic!("no get line in the pod's log: {}\n{}", run.log, run.message));
    assert_eq!(get["status"], 0, "the get failed in the pod: {get}");
    let field = get
        .as_object()
        .and_then(|o| o.values().find_map(|v| v.get("cri")))
        .unwrap_or_else(|| panic!("the get did not return the field 'cri': {get}"));
    assert_eq!(field["len"], 4096, "the get returned {field}");
    assert_eq!(run.exit_code, Some(0), "get container: {}", run.message);
}

/// `preprocess --serve` in a pod of `handler`, answering HTTP and storing its state.
async fn serve(k: &mut Kubelet, redis: &Redis, handler: &str, annotate: bool) {
    let port = free_port();
    let spec = ContainerSpec {
        name: "preprocess".into(),
        image: PREPROCESS.into(),
        args: vec!["--serve".into(), port.to_string()],
        env: function_env(redis, PLUGIN_IN_POD),
        mounts: vec![(plugin_dir(), PLUGIN_IN_POD.into())],
    };
    let pod = k
        .run_pod(&pod("preprocess-serve", handler, annotate))
        .await
        .expect("RunPodSandbox");
    let c = k
        .start_container(&pod, &spec)
        .await
        .expect("CreateContainer");
    assert_eq!(
        c.started,
        Ok(()),
        "StartContainer refused preprocess --serve"
    );
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if let Ok((200, body)) = http(port, "GET", "/healthz") {
            assert_eq!(body.trim(), "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "preprocess --serve never answered /healthz on port {port}; log: {}",
            k.log(&c)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let chain = chain_id("cri-http");
    let (code, body) = http(port, "POST", &format!("/?chain={chain}&size=4096"))
        .expect("POST to preprocess --serve");
    assert_eq!(code, 200, "preprocess answered {code}: {body}");
    let answer: Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body}"));
    assert_eq!(answer["function"], "preprocess", "{answer}");
    let stored = redis.hgetall(&format!("skylark:bundle:{chain}"));
    assert!(
        stored.contains_key("preprocess"),
        "the request succeeded but skylark:bundle:{chain} has no field 'preprocess'"
    );
    // A kubelet stops a serving pod with a grace period, then kills it.
    k.stop_remove_container(&c, 2)
        .await
        .expect("StopContainer, RemoveContainer");
    k.stop_remove_pod(&pod)
        .await
        .expect("StopPodSandbox, RemovePodSandbox");
}

/// crun without the annotation: crun does not select its WasmEdge handler and execs the
/// module as a native program.
async fn control_no_annotation(k: &mut Kubelet, redis: &Redis) {
    let chain = chain_id("cri-no-annotation");
    let run = run_pod(
        k,
        &pod("no-annotation", HANDLER, false),
        &probe(
            "probe",
            &["put", &chain, "cri", "64", "1"],
            redis,
            PLUGIN_IN_POD,
        ),
    )
    .await;
    let said = format!("{:?} {} {}", run.started, run.message, run.log).to_lowercase();
    assert!(
        run.started.is_err() || run.exit_code != Some(0),
        "a pod without the annotation ran the module: {said}"
    );
    assert!(
        said.contains("exec format error"),
        "a pod without the annotation failed, but not as a native exec of the module: {said}"
    );
    assert!(op_line(&run.log, "put").is_none(), "{said}");
    assert!(redis.hgetall(&format!("skylark:bundle:{chain}")).is_empty());
    eprintln!("control, no annotation: {}", said.trim());
}

/// `WASMEDGE_PLUGIN_PATH` naming a directory without the plugin: the module's imports of
/// module `skylark` cannot be resolved.
async fn control_wrong_plugin_path(k: &mut Kubelet, redis: &Redis, handler: &str, annotate: bool) {
    let chain = chain_id("cri-no-plugin");
    let run = run_pod(
        k,
        &pod("wrong-plugin-path", handler, annotate),
        &probe(
            "probe",
            &["put", &chain, "cri", "64", "1"],
            redis,
            "/opt/skylark/no-plugin-here",
        ),
    )
    .await;
    let said = format!("{:?} {} {}", run.started, run.message, run.log);
    assert!(
        run.started.is_err() || run.exit_code.is_some_and(|c| c != 0),
        "a pod with a wrong WASMEDGE_PLUGIN_PATH succeeded: {said}"
    );
    assert!(
        said.contains("unknown import"),
        "a wrong WASMEDGE_PLUGIN_PATH failed, but not at the skylark imports: {said}"
    );
    assert!(op_line(&run.log, "put").is_none(), "{said}");
    assert!(redis.hgetall(&format!("skylark:bundle:{chain}")).is_empty());
    eprintln!(
        "control ({handler}), wrong WASMEDGE_PLUGIN_PATH: {}",
        said.trim()
    );
}

/// A private containerd with the images imported, a redis-server, and a runtime for the
/// CRI client; `None` when the machine cannot run it and may skip.
struct Setup {
    rt: tokio::runtime::Runtime,
    redis: Redis,
    containerd: Containerd,
    machine: Machine,
    work: tempfile::TempDir,
}

impl Setup {
    /// `shim`: also configure the handler `skylark` (builds `containerd-shim-skylark-v1`).
    fn start(shim: bool) -> Option<Setup> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let opt_out = std::env::var("SKYLARK_SKIP_CRI").ok();
        let machine = match Machine::check(&root()) {
            Ok(m) => m,
            Err(Error::Unavailable(why)) => match verdict(&why, ci, opt_out.as_deref()) {
                Verdict::Skip(why) => {
                    eprintln!("SKIPPED: CRI test on this machine: {why}");
                    return None;
                }
                Verdict::Fail(why) => panic!("{why}"),
            },
            Err(e) => panic!("{e}"),
        };
        let work = tempfile::Builder::new()
            .prefix("skylark-cri.")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let wasm_dir = wasm("probe")
            .parent()
            .map(Path::to_path_buf)
            .expect("wasm dir");
        let archives =
            images::build(&root(), work.path(), &wasm_dir).unwrap_or_else(|e| panic!("{e}"));
        let shim_bin = shim.then(|| {
            images::cargo_bin(&root(), "containerd-shim-skylark-v1")
                .unwrap_or_else(|e| panic!("{e}"))
        });
        let containerd =
            Containerd::start(&machine, work.path(), images::PAUSE, shim_bin.as_deref())
                .unwrap_or_else(|e| panic!("{e}"));
        for tar in &archives.tars {
            containerd.import(tar).unwrap_or_else(|e| panic!("{e}"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Some(Setup {
            rt,
            redis: Redis::start(),
            containerd,
            machine,
            work,
        })
    }

    /// A kubelet connected to this containerd.
    async fn kubelet(&self) -> Kubelet {
        let mut k = Kubelet::connect(
            &self.containerd.socket,
            &self.work.path().join("pods"),
            &self.containerd.cgroup_root,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let version = k.runtime_version().await.unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{version} (trixie {}); crun {}{}",
            self.machine.containerd_version,
            self.machine.crun.display(),
            if self.machine.hybrid_cgroups {
                " in a mount namespace without /sys/fs/cgroup/unified (hybrid cgroups)"
            } else {
                ""
            }
        );
        k
    }

    /// Runs `scenarios`; on failure prints containerd's configuration and log.
    fn run<F: std::future::Future<Output = ()>>(&self, scenarios: F) {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.rt.block_on(scenarios)));
        if let Err(panic) = outcome {
            eprintln!(
                "containerd configuration:\n{}\ncontainerd log (tail):\n{}",
                self.containerd.config,
                self.containerd.log_tail(40)
            );
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn a_kubelet_runs_skylark_functions_through_containerd_and_crun() {
    let Some(s) = Setup::start(false) else {
        return;
    };
    s.run(async {
        let mut k = s.kubelet().await;
        put_and_get(&mut k, &s.redis, HANDLER, true, PLUGIN_IN_POD).await;
        serve(&mut k, &s.redis, HANDLER, true).await;
        control_no_annotation(&mut k, &s.redis).await;
        control_wrong_plugin_path(&mut k, &s.redis, HANDLER, true).await;
        assert_eq!(
            k.pod_count().await.unwrap_or(usize::MAX),
            0,
            "pods left behind"
        );
    });
}

#[test]
fn a_kubelet_runs_skylark_functions_through_the_skylark_shim() {
    let Some(s) = Setup::start(true) else {
        return;
    };
    s.run(async {
        let mut k = s.kubelet().await;
        // No annotation: the shim runs every wasm entrypoint with WasmEdge. The put's
        // WASMEDGE_PLUGIN_PATH is a list with a directory without plugins and an empty
        // entry (which would abort WasmEdge 0.14's own parsing of the variable).
        let list = format!("/opt/skylark/no-plugin-here:{PLUGIN_IN_POD}:");
        put_and_get(&mut k, &s.redis, SHIM_HANDLER, false, &list).await;
        serve(&mut k, &s.redis, SHIM_HANDLER, false).await;
        control_wrong_plugin_path(&mut k, &s.redis, SHIM_HANDLER, false).await;
        assert_eq!(
            k.pod_count().await.unwrap_or(usize::MAX),
            0,
            "pods left behind"
        );
    });
}
