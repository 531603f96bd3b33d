//! A CRI client that drives pods as a kubelet does: `Version` and `Status` first, then per
//! pod `RunPodSandbox`, `ImageStatus` (image pull policy `IfNotPresent`: the images were
//! imported, none can be pulled), `CreateContainer`, `StartContainer`, `ContainerStatus`
//! polls, the container's CRI log file, and on the way down `StopContainer`,
//! `RemoveContainer`, `StopPodSandbox`, `RemovePodSandbox`. Pods use the host network
//! (no CNI here), like the Redis DaemonSet and the functions on the testbed.

use crate::{Error, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, CreateContainerRequest, ImageSpec,
    ImageStatusRequest, KeyValue, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
    StopContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// The annotation crun's WasmEdge handler looks for, and its value.
pub const VARIANT: (&str, &str) = ("module.wasm.image/variant", "compat-smart");

/// A CRI connection (runtime and image services on one channel).
pub struct Kubelet {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// Where pod log directories go (a kubelet's `/var/log/pods`).
    log_root: PathBuf,
    /// The cgroup under which pods go (a kubelet's `/kubepods`).
    cgroup_root: String,
}

/// A pod to run: name, runtime handler, and whether it carries the WasmEdge annotation.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub handler: String,
    pub wasm_annotation: bool,
}

/// A container of a pod.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (host path, container path), read-only.
    pub mounts: Vec<(PathBuf, String)>,
}

/// A running pod sandbox.
pub struct Pod {
    pub id: String,
    config: PodSandboxConfig,
}

/// A created container and what StartContainer said.
pub struct Container {
    pub id: String,
    /// `Err(message)` when StartContainer was refused.
    pub started: std::result::Result<(), String>,
    log_file: PathBuf,
}

/// The end of a container.
#[derive(Debug, Clone)]
pub struct Exited {
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

impl Kubelet {
    /// Connects to containerd's CRI socket and checks `Version` and that the runtime is
    /// ready (`Status`), as a kubelet does before it runs pods.
    /// Pods' log directories go under `log_root`, their cgroups under `cgroup_root`.
    pub async fn connect(socket: &Path, log_root: &Path, cgroup_root: &str) -> Result<Kubelet> {
        let path = socket.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Failed(format!("CRI endpoint: {e}")))?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| Error::Failed(format!("connect to {}: {e}", socket.display())))?;
        let mut me = Kubelet {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            log_root: log_root.to_path_buf(),
            cgroup_root: cgroup_root.to_string(),
        };
        let version = me
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| Error::cri("Version", s))?
            .into_inner();
        if version.runtime_api_version != "v1" {
            return Err(Error::Failed(format!(
                "CRI runtime API {} (want v1)",
                version.runtime_api_version
            )));
        }
        let status = me
            .runtime
            .status(StatusRequest { verbose: false })
            .await
            .map_err(|s| Error::cri("Status", s))?
            .into_inner();
        let ready = status
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.r#type == "RuntimeReady" && c.status);
        if !ready {
            return Err(Error::Failed(format!("runtime not ready: {status:?}")));
        }
        Ok(me)
    }

    /// The runtime's name and version, e.g. `containerd v1.7.24`.
    pub async fn runtime_version(&mut self) -> Result<String> {
        let v = self
            .runtime
            .version(VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| Error::cri("Version", s))?
            .into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// RunPodSandbox with a kubelet's sandbox configuration: metadata, a log directory
    /// `<ns>_<name>_<uid>`, host network, pod IPC/PID namespaces, the annotation if asked.
    pub async fn run_pod(&mut self, spec: &PodSpec) -> Result<Pod> {
        let uid = format!("{}-{}", spec.name, std::process::id());
        let log_directory = self.log_root.join(format!("skylark_{}_{uid}", spec.name));
        std::fs::create_dir_all(&log_directory)
            .map_err(|e| Error::io("create", &log_directory, e))?;
        let mut annotations = HashMap::new();
        if spec.wasm_annotation {
            annotations.insert(VARIANT.0.to_string(), VARIANT.1.to_string());
        }
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: spec.name.clone(),
                uid,
                namespace: "skylark".into(),
                attempt: 0,
            }),
            // A kubelet sets no hostname for host-network pods (they keep the node's UTS
            // namespace; crun refuses a hostname there).
            hostname: String::new(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels: HashMap::from([("app".to_string(), spec.name.clone())]),
            annotations,
            linux: Some(LinuxPodSandboxConfig {
                // A kubelet with the cgroupfs driver: /kubepods/<qos>/pod<uid>.
                cgroup_parent: format!("/{}/pod{}", self.cgroup_root, spec.name),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        pid: NamespaceMode::Container as i32,
                        ipc: NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: spec.handler.clone(),
            })
            .await
            .map_err(|s| Error::cri("RunPodSandbox", s))?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// ImageStatus (the image must be there: `IfNotPresent` with nothing to pull from),
    /// CreateContainer and StartContainer. A refused StartContainer is returned in
    /// [`Container::started`], not as an error: the controls expect it.
    pub async fn start_container(&mut self, pod: &Pod, spec: &ContainerSpec) -> Result<Container> {
        let image = ImageSpec {
            image: spec.image.clone(),
            ..Default::default()
        };
        let present = self
            .images
            .image_status(ImageStatusRequest {
                image: Some(image.clone()),
                verbose: false,
            })
            .await
            .map_err(|s| Error::cri("ImageStatus", s))?
            .into_inner()
            .image
            .is_some();
        if !present {
            return Err(Error::Failed(format!(
                "image {} is not in containerd (imports failed?)",
                spec.image
            )));
        }
        let log_rel = format!("{}/0.log", spec.name);
        let log_dir = Path::new(&pod.config.log_directory).join(&spec.name);
        std::fs::create_dir_all(&log_dir).map_err(|e| Error::io("create", &log_dir, e))?;
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: spec.name.clone(),
                attempt: 0,
            }),
            image: Some(image),
            args: spec.args.clone(),
            envs: spec
                .env
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: spec
                .mounts
                .iter()
                .map(|(host, container)| Mount {
                    container_path: container.clone(),
                    host_path: host.to_string_lossy().into_owned(),
                    readonly: true,
                    ..Default::default()
                })
                .collect(),
            log_path: log_rel.clone(),
            ..Default::default()
        };
        let id = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .map_err(|s| Error::cri("CreateContainer", s))?
            .into_inner()
            .container_id;
        let started = self
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string());
        Ok(Container {
            id,
            started,
            log_file: log_dir.join("0.log"),
        })
    }

    /// Polls ContainerStatus until the container has exited (or `timeout` passes).
    pub async fn wait_exited(&mut self, c: &Container, timeout: Duration) -> Result<Exited> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .runtime
                .container_status(k8s_cri::v1::ContainerStatusRequest {
                    container_id: c.id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|s| Error::cri("ContainerStatus", s))?
                .into_inner()
                .status
                .ok_or_else(|| Error::Failed(format!("no status for container {}", c.id)))?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(Exited {
                    exit_code: status.exit_code,
                    reason: status.reason,
                    message: status.message,
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Failed(format!(
                    "container {} still in state {} after {timeout:?}; log: {}",
                    c.id,
                    status.state,
                    read_log(&c.log_file)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The container's output so far, from its CRI log file.
    pub fn log(&self, c: &Container) -> String {
        read_log(&c.log_file)
    }

    /// StopContainer (grace `grace_s` seconds, then SIGKILL) and RemoveContainer.
    pub async fn stop_remove_container(&mut self, c: &Container, grace_s: i64) -> Result<()> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: c.id.clone(),
                timeout: grace_s,
            })
            .await
            .map_err(|s| Error::cri("StopContainer", s))?;
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: c.id.clone(),
            })
            .await
            .map_err(|s| Error::cri("RemoveContainer", s))?;
        Ok(())
    }

    /// StopPodSandbox and RemovePodSandbox.
    pub async fn stop_remove_pod(&mut self, pod: &Pod) -> Result<()> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .map_err(|s| Error::cri("StopPodSandbox", s))?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .map_err(|s| Error::cri("RemovePodSandbox", s))?;
        Ok(())
    }

    /// The number of pod sandboxes containerd still knows (0 after a clean tear-down).
    pub async fn pod_count(&mut self) -> Result<usize> {
        Ok(self
            .runtime
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| Error::cri("ListPodSandbox", s))?
            .into_inner()
            .items
            .len())
    }
}

/// The messages of a CRI log file (`<time> <stream> <P|F> <message>` lines), joined; a
/// partial line (`P`) continues on the next.
pub fn parse_cri_log(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
        let message = parts.next().unwrap_or("");
        out.push_str(message);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|t| parse_cri_log(&t))
        .unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::parse_cri_log;

    #[test]
    fn cri_log_lines_are_joined() {
        let text = "2026-01-01T00:00:00.1Z stdout P {\"op\":\n\
                    2026-01-01T00:00:00.2Z stdout F \"put\"}\n\
                    2026-01-01T00:00:00.3Z stderr F an error: here\n";
        assert_eq!(parse_cri_log(text), "{\"op\":\"put\"}\nan error: here\n");
    }
}
