//! A private containerd: generated configuration, root, state and sockets all in one
//! temporary directory; nothing system-wide is configured. The configuration has the CRI
//! runtime handler `crun` as `runtimeclass/README.md` documents it for a node, and
//! optionally `skylark` (`containerd-shim-skylark-v1`, named by the handler's
//! `runtime_path` as the node installer configures it). `crun`:
//! `io.containerd.runc.v2` with trixie's crun as `BinaryName`, the pod annotation
//! `module.wasm.image/*` passed through, `SystemdCgroup = false`, and
//! `restrict_oom_score_adj = true` (the test runs in a process whose OOM score a pod may not
//! lower). On hybrid cgroup hosts `BinaryName` is a wrapper that runs crun in a private
//! mount namespace without `/sys/fs/cgroup/unified` (`runtimeclass/crun/FINDINGS.md`).
//!
//! The snapshotter is `native` (plain copies: no overlay mounts to leave behind in the
//! temporary directory). containerd's runc v2 shims put their sockets under
//! `/run/containerd/s/` (a path fixed in containerd 1.7, named by a hash of this instance's
//! socket path, so it does not collide with a system containerd).

use crate::machine::Machine;
use crate::{Error, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The runtime handler of crun's WasmEdge handler (a RuntimeClass's `handler`).
pub const HANDLER: &str = "crun";
/// The runtime handler of `containerd-shim-skylark-v1` (`shim/`), when it is configured.
pub const SHIM_HANDLER: &str = "skylark";

/// A running containerd; stopped (and its temporary directory's mounts released) on drop.
pub struct Containerd {
    child: Child,
    /// The temporary directory holding everything of this instance.
    pub work: PathBuf,
    /// The CRI (gRPC) socket.
    pub socket: PathBuf,
    /// The generated configuration (also in the failure messages).
    pub config: String,
    /// The cgroup (in every hierarchy) under which this instance's pods are to go; a
    /// kubelet's `/kubepods`. Removed on drop.
    pub cgroup_root: String,
    ctr: PathBuf,
}

/// The `BinaryName` wrapper: crun, in a private mount namespace without the v2 hierarchy
/// when the host has hybrid cgroups.
fn crun_wrapper(machine: &Machine) -> String {
    let crun = machine.crun.display();
    if machine.hybrid_cgroups {
        format!(
            "#!/bin/sh\n# crun 1.21 refuses hybrid cgroups: run it where /sys/fs/cgroup/unified is not mounted.\n\
             exec unshare --mount --propagation private -- sh -c 'umount /sys/fs/cgroup/unified && exec \"$@\"' sh '{crun}' \"$@\"\n"
        )
    } else {
        format!("#!/bin/sh\nexec '{crun}' \"$@\"\n")
    }
}

/// containerd's configuration (version 2, containerd 1.7) for an instance in `work`;
/// `shim` adds the handler `skylark` (runtime type `io.containerd.skylark.v1`) with that
/// executable as its `runtime_path`, as the node installer configures it
/// (`runtimeclass/node-installer/install.sh`): containerd starts the shim from there, not
/// from its `PATH`.
pub fn config(
    work: &Path,
    crun_wrapper: &Path,
    sandbox_image: &str,
    shim: Option<&Path>,
) -> String {
    let w = work.display();
    let crun = crun_wrapper.display();
    let shim = match shim {
        Some(path) => format!(
            r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{SHIM_HANDLER}]
      runtime_type = "io.containerd.skylark.v1"
      runtime_path = "{}"
"#,
            path.display()
        ),
        None => String::new(),
    };
    format!(
        r#"version = 2
root = "{w}/root"
state = "{w}/state"

[grpc]
  address = "{w}/containerd.sock"

[ttrpc]
  address = "{w}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{w}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "{HANDLER}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.runc.v2"
      pod_annotations = ["module.wasm.image/*"]
      container_annotations = ["module.wasm.image/*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}.options]
        BinaryName = "{crun}"
        Root = "{w}/crun-state"
        SystemdCgroup = false
{shim}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{w}/cni/bin"
    conf_dir = "{w}/cni/conf.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{w}/certs.d"
"#
    )
}

impl Containerd {
    /// Writes the configuration and the crun wrapper into `work` and starts containerd;
    /// returns once its CRI socket accepts connections. `shim`: the
    /// `containerd-shim-skylark-v1` executable, for the second handler.
    pub fn start(
        machine: &Machine,
        work: &Path,
        sandbox_image: &str,
        shim: Option<&Path>,
    ) -> Result<Containerd> {
        for d in ["cni/bin", "cni/conf.d", "certs.d", "opt"] {
            let dir = work.join(d);
            fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        }
        let wrapper = work.join("crun-wrapper");
        fs::write(&wrapper, crun_wrapper(machine)).map_err(|e| Error::io("write", &wrapper, e))?;
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("chmod", &wrapper, e))?;
        // This instance's bin/ holds the Skylark shim's wrapper, the handler's runtime_path
        // (not on containerd's PATH: the handler must name it, as the node installer does).
        let bin = work.join("bin");
        fs::create_dir_all(&bin).map_err(|e| Error::io("create", &bin, e))?;
        let shim_wrapper = bin.join("containerd-shim-skylark-v1");
        let config = config(
            work,
            &wrapper,
            sandbox_image,
            shim.map(|_| shim_wrapper.as_path()),
        );
        if let Some(shim) = shim {
            // The shim links trixie's libwasmedge, whose own dependencies the loader looks
            // up through libwasmedge's RUNPATH ($ORIGIN) and the system, not through the
            // shim's: give it the trixie library directories (on a trixie node, the
            // system's libraries are the right ones and no wrapper is needed).
            let wrapper = &shim_wrapper;
            let script = format!(
                "#!/bin/sh\nLD_LIBRARY_PATH='{}' exec '{}' \"$@\"\n",
                machine.library_path,
                shim.display()
            );
            fs::write(wrapper, script).map_err(|e| Error::io("write", wrapper, e))?;
            fs::set_permissions(wrapper, fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("chmod", wrapper, e))?;
        }
        let config_path = work.join("config.toml");
        fs::write(&config_path, &config).map_err(|e| Error::io("write", &config_path, e))?;
        let log_path = work.join("containerd.log");
        let log = fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("dup", &log_path, e))?;
        // The runc shim is found on PATH: trixie's comes first.
        let path = format!(
            "{}:{}",
            machine.cri_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let containerd = machine.cri_bin.join("containerd");
        let child = Command::new(&containerd)
            .arg("--config")
            .arg(&config_path)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::io("start", &containerd, e))?;
        let mut me = Containerd {
            child,
            work: work.to_path_buf(),
            socket: work.join("containerd.sock"),
            config,
            cgroup_root: format!(
                "skylark-cri-{}",
                work.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            ),
            ctr: machine.cri_bin.join("ctr"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = me.child.try_wait() {
                return Err(Error::Failed(format!(
                    "containerd exited ({status}) at start:\n{}",
                    me.log_tail(30)
                )));
            }
            if std::os::unix::net::UnixStream::connect(&me.socket).is_ok() {
                return Ok(me);
            }
            if Instant::now() > deadline {
                return Err(Error::Failed(format!(
                    "containerd's socket {} did not answer within 60 s:\n{}",
                    me.socket.display(),
                    me.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.work.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `ctr -n k8s.io images import` of an OCI archive, unpacked for the CRI's snapshotter
    /// (what `ctr images import` on a node does; the images cannot be pulled here).
    pub fn import(&self, tar: &Path) -> Result<()> {
        let out = Command::new(&self.ctr)
            .arg("--address")
            .arg(&self.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(tar)
            .output()
            .map_err(|e| Error::io("run", &self.ctr, e))?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "ctr images import {}: {}{}",
                tar.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }
}

/// Mount points at or under `dir` (deepest first), from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// `dir` and every directory below it.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // After a failed test, containers may still run: delete them through crun, and
        // end this instance's shims (their command line names this instance's socket).
        let crun_state = self.work.join("crun-state/k8s.io");
        for id in fs::read_dir(&crun_state).into_iter().flatten().flatten() {
            let _ = Command::new(self.work.join("crun-wrapper"))
                .arg("--root")
                .arg(&crun_state)
                .args(["delete", "-f"])
                .arg(id.file_name())
                .output();
        }
        let socket = self.socket.to_string_lossy().into_owned();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
            if is_shim && args.contains(&socket) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid was read
                // from /proc just now and its command line names this instance's socket.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // SIGTERM, then SIGKILL after 10 s.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test may leave a pod's shm mount behind; release it so the temporary
        // directory can be removed.
        for m in mounts_under(&self.work) {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: c is a NUL-terminated path that lives across the call.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // The pods' cgroups, empty now, deepest first.
        for h in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let mut dirs = Vec::new();
            collect_dirs(&h.path().join(&self.cgroup_root), &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                let _ = fs::remove_dir(&d);
            }
        }
        // The runc shims' socket directory (fixed in containerd 1.7) and the Skylark shim's
        // state directory (containerd-shim-wasm's default), if nothing else uses them.
        let _ = fs::remove_dir("/run/containerd/s");
        let _ = fs::remove_dir("/run/containerd/skylark/k8s.io");
        let _ = fs::remove_dir("/run/containerd/skylark");
        let _ = fs::remove_dir("/run/containerd");
        let mut stderr = std::io::stderr();
        let _ = writeln!(stderr, "containerd in {} stopped", self.work.display());
    }
}
