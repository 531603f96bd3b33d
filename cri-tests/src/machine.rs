//! What this machine offers the CRI test: root, the tools it runs, the private containerd
//! and crun (`runtimeclass/cri/install-containerd.sh`), and the cgroup layout. Anything
//! missing is [`Error::Unavailable`]; [`verdict`] decides whether that is a skip or a
//! failure (in CI only with `SKYLARK_SKIP_CRI=<reason>` a skip).

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The installed programs and the facts about this machine the test depends on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Directory with `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub cri_bin: PathBuf,
    /// trixie's crun (+WASM:wasmedge), through the trixie loader (a wrapper script).
    pub crun: PathBuf,
    /// containerd's version, e.g. `1.7.24~ds1`.
    pub containerd_version: String,
    /// The trixie library directories (crun's, WasmEdge's and the trixie runtime's).
    pub library_path: String,
    /// Hybrid cgroups with controllers on the v2 hierarchy: crun 1.21 refuses containers
    /// unless it runs in a mount namespace without `/sys/fs/cgroup/unified`.
    pub hybrid_cgroups: bool,
}

/// Finds `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Machine {
    /// Checks the machine and installs (or finds cached) containerd and crun.
    pub fn check(repo_root: &Path) -> Result<Machine> {
        if !cfg!(target_os = "linux") {
            return Err(Error::Unavailable("containerd and crun need Linux".into()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::Unavailable(
                "needs root (a rootful containerd; rootless is not set up here)".into(),
            ));
        }
        for tool in [
            "gcc",
            "redis-server",
            "unshare",
            "umount",
            "apt-get",
            "dpkg-deb",
        ] {
            if on_path(tool).is_none() {
                return Err(Error::Unavailable(format!(
                    "missing tool {tool} (scripts/setup-deps.sh installs it)"
                )));
            }
        }
        let script = repo_root.join("runtimeclass/cri/install-containerd.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| Error::io("run", &script, e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("").trim().to_string();
        match out.status.code() {
            Some(0) => {}
            Some(77) => return Err(Error::Unavailable(last)),
            other => {
                return Err(Error::Failed(format!(
                    "{} failed ({other:?}): {last}\n{}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        }
        let env_file = PathBuf::from(&last);
        let env =
            std::fs::read_to_string(&env_file).map_err(|e| Error::io("read", &env_file, e))?;
        let var = |name: &str| -> Result<String> {
            env.lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('\'').to_string())
                .ok_or_else(|| Error::Failed(format!("{}: no {name}", env_file.display())))
        };
        Ok(Machine {
            cri_bin: PathBuf::from(var("SKYLARK_CRI_BIN")?),
            crun: PathBuf::from(var("SKYLARK_CRI_CRUN")?),
            containerd_version: var("SKYLARK_CRI_VERSION")?,
            library_path: var("SKYLARK_CRI_LIBPATH")?,
            hybrid_cgroups: hybrid_cgroups(),
        })
    }
}

/// Whether `/sys/fs/cgroup` is the legacy (v1) layout with a v2 hierarchy at
/// `/sys/fs/cgroup/unified` that has controllers (see `runtimeclass/crun/FINDINGS.md`).
fn hybrid_cgroups() -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo: "id parent maj:min root mountpoint options ... - fstype source superopts"
    let fstype = |mountpoint: &str| {
        mountinfo
            .lines()
            .rev()
            .filter(|l| l.split_whitespace().nth(4) == Some(mountpoint))
            .filter_map(|l| l.split_once(" - "))
            .find_map(|(_, tail)| tail.split_whitespace().next().map(str::to_string))
    };
    let controllers = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .map(|c| !c.trim().is_empty())
        .unwrap_or(false);
    fstype("/sys/fs/cgroup").as_deref() != Some("cgroup2")
        && fstype("/sys/fs/cgroup/unified").as_deref() == Some("cgroup2")
        && controllers
}

/// What the test makes of a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The machine cannot run it and may skip: the reason.
    Skip(String),
    /// The test must fail: why.
    Fail(String),
}

/// A machine that cannot run the test: a skip outside CI; in CI (`ci`) a failure unless
/// `opt_out` (the value of `SKYLARK_SKIP_CRI`) gives a non-empty reason.
pub fn verdict(unavailable: &str, ci: bool, opt_out: Option<&str>) -> Verdict {
    match opt_out.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => Verdict::Skip(format!("{unavailable} (allowed: {reason})")),
        None if !ci => Verdict::Skip(unavailable.to_string()),
        None => Verdict::Fail(format!(
            "the CRI test cannot run on this CI machine: {unavailable}; \
             set SKYLARK_SKIP_CRI=<reason> to allow that"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_fails_in_ci_unless_a_reason_is_given() {
        assert!(matches!(verdict("no root", false, None), Verdict::Skip(_)));
        assert!(matches!(verdict("no root", true, None), Verdict::Fail(_)));
        assert!(matches!(
            verdict("no root", true, Some("  ")),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict("no root", true, Some("no containers on this runner")),
            Verdict::Skip(_)
        ));
    }
}
