//! `oci-image`: writes OCI image layouts for Skylark without Docker, buildah or a registry.
//!
//! ```text
//! oci-image wasm   --wasm preprocess.wasm --name skylark/preprocess:0.1.0 --out DIR
//!                  [--platform linux/amd64,linux/arm64] [--tar FILE]
//! oci-image plugin --so libwasmedgePluginSkylark.so --name skylark/plugin-installer:0.1.0
//!                  --out DIR [--busybox FILE] [--platform linux/arm64] [--tar FILE]
//! oci-image static --bin pause --name skylark/pause:0.1.0 --out DIR [--platform P] [--tar FILE]
//! oci-image rootfs --dir ROOT --entrypoint /skylark/install.sh --name skylark/shim-installer:0.1.0
//!                  --out DIR [--env PATH=/usr/bin:/bin] [--platform P] [--tar FILE]
//! oci-image rootfs --dir linux/amd64=ROOT --dir linux/arm64=ROOT2 --entrypoint ... (multi-arch)
//! ```
//!
//! `wasm` makes a FROM-scratch image: one layer holding `/<file>.wasm`, `Entrypoint`
//! `["/<file>.wasm"]`, and the annotation `module.wasm.image/variant: compat-smart` that tells
//! crun to run the entrypoint with its WasmEdge handler. The module is portable, so by
//! default one manifest per platform `linux/amd64` and `linux/arm64` is written, all sharing
//! the layer: crun runs it as a Linux container, and containerd's CRI pull only accepts
//! images offering the node's platform (`wasi/wasm` can still be asked for with
//! `--platform wasi/wasm`).
//!
//! `plugin` makes the plugin installer image: `/skylark/libwasmedgePluginSkylark.so`, plus,
//! with `--busybox`, a statically linked busybox at `/bin/busybox` (e.g. `/bin/busybox` of
//! Debian's `busybox-static` package for the nodes' architecture) that the installer
//! DaemonSet runs to copy the plugin onto the node. Without `--busybox` the image holds only
//! data (for a Kubernetes image volume). The plugin is native code: one platform only,
//! default the machine's own.
//!
//! `static` makes a FROM-scratch image of one statically linked executable, `/<file>`, which
//! is also its `Entrypoint` (one platform, default the machine's own). The CRI test
//! (`cri-tests/`) packs its pod sandbox ("pause") program with it, since the public pause
//! image cannot be pulled there.
//!
//! `rootfs` makes an image of a whole directory tree (regular files with their permission
//! bits, directories, symbolic links; anything else is refused), with the given
//! `Entrypoint` and one `Env` entry (default `PATH=/usr/bin:/bin`); one platform, default the
//! machine's own. Or a multi-architecture image: `--dir OS/ARCH=ROOT` once per platform,
//! each platform's manifest with its own root's layer (same entrypoint and `Env`). The
//! shim installer image (`runtimeclass/node-installer/build-image.sh`, amd64 and arm64) is
//! built with it.
//!
//! Native code must match its platform: every ELF file of a `linux/*` layer (the plugin,
//! busybox, a root's programs and libraries) must be built for that platform's
//! architecture (`e_machine`: x86-64 for amd64, AArch64 for arm64, ...), or the image is
//! refused; a node of that platform could not run it.
//!
//! The output is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`):
//! `index.json` names an image index (one manifest per platform) with the annotations
//! `org.opencontainers.image.ref.name` (the tag) and `io.containerd.image.name` (the full
//! name). Everything is deterministic: sorted tar entries, mtime 0, uid/gid 0, fixed modes,
//! gzip without timestamp, config `created` at the Unix epoch; the same inputs give the same
//! digests. `--tar FILE` also writes the layout as one tar (an "OCI archive"), which
//! `ctr -n k8s.io images import FILE` and `skopeo copy oci-archive:FILE docker://...` accept.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage:
  oci-image wasm   --wasm FILE --name NAME[:TAG] --out DIR [--platform P[,P...]] [--tar FILE]
  oci-image plugin --so FILE --name NAME[:TAG] --out DIR [--busybox FILE] [--platform P] [--tar FILE]
  oci-image static --bin FILE --name NAME[:TAG] --out DIR [--platform P] [--tar FILE]
  oci-image rootfs --dir DIR --entrypoint PATH --name NAME[:TAG] --out DIR [--env K=V] [--platform P] [--tar FILE]
  oci-image rootfs --dir OS/ARCH=DIR [--dir OS/ARCH=DIR ...] --entrypoint PATH --name NAME[:TAG] --out DIR [--env K=V] [--tar FILE]
platforms are OS/ARCH[/VARIANT], e.g. linux/amd64, linux/arm64, wasi/wasm";

/// The annotation crun's WasmEdge handler looks at; `compat-smart` runs only wasm
/// entrypoints with WasmEdge (so pause and sidecar containers of the pod stay native).
const VARIANT_KEY: &str = "module.wasm.image/variant";
const VARIANT_VALUE: &str = "compat-smart";
/// Where the plugin lands in the installer image.
const PLUGIN_PATH: &str = "skylark/libwasmedgePluginSkylark.so";
const BUSYBOX_PATH: &str = "bin/busybox";

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn main() -> ExitCode {
    let (command, flags) = match parse(std::env::args_os().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("oci-image: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&command, &flags) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oci-image: {e}");
            ExitCode::from(1)
        }
    }
}

/// Builds the image `command` (`wasm`, `plugin` or `static`) with `flags`; returns a
/// one-line JSON summary.
fn run(command: &str, flags: &Flags) -> Result<Value, String> {
    let spec = match command {
        "wasm" => wasm_spec(flags)?,
        "plugin" => plugin_spec(flags)?,
        "static" => static_spec(flags)?,
        "rootfs" => rootfs_spec(flags)?,
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    let out = PathBuf::from(flags.required("out")?);
    let built = write_layout(&spec, &out)?;
    if let Some(tar_path) = flags.get("tar") {
        write_layout_tar(&out, Path::new(tar_path))?;
    }
    Ok(json!({
        "name": spec.reference.full_name(),
        "out": out.display().to_string(),
        "index": built.index_digest,
        "manifests": built.manifests,
        "layer": built.layer_digest,
        "layers": built.layers,
        "tar": flags.get("tar"),
    }))
}

/// `--flag value` pairs, each flag at most once but those of [`REPEATABLE`].
struct Flags(BTreeMap<String, Vec<String>>);

/// Flags that may be given more than once.
const REPEATABLE: &[&str] = &["dir"];

impl Flags {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of a repeatable flag, in order.
    fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required\n{USAGE}"))
    }
}

/// The command and its `--flag value` / `--flag=value` options (each flag once), or
/// `None` for `--help`.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<(String, Flags)>, String> {
    use lexopt::prelude::*;
    const KNOWN: &[&str] = &[
        "wasm",
        "so",
        "busybox",
        "bin",
        "name",
        "out",
        "platform",
        "tar",
        "dir",
        "entrypoint",
        "env",
    ];
    let mut p = lexopt::Parser::from_args(args);
    let mut command = None;
    let mut flags = BTreeMap::new();
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long(name) if KNOWN.contains(&name) => {
                let name = name.to_string();
                let value = p
                    .value()
                    .and_then(|v| v.string())
                    .map_err(|e| format!("--{name}: {e}"))?;
                let values: &mut Vec<String> = flags.entry(name.clone()).or_default();
                if !values.is_empty() && !REPEATABLE.contains(&name.as_str()) {
                    return Err(format!("--{name} given twice"));
                }
                values.push(value);
            }
            Long(name) => return Err(format!("unknown option --{name}\n{USAGE}")),
            Value(v) if command.is_none() => {
                command = Some(v.string().map_err(|e| e.to_string())?);
            }
            other => {
                return Err(format!(
                    "unexpected argument {}\n{USAGE}",
                    other.unexpected()
                ))
            }
        }
    }
    let command = command.ok_or(USAGE)?;
    Ok(Some((command, Flags(flags))))
}

/// An image reference `[registry/]repository[:tag]`.
#[derive(Debug, Clone)]
struct Reference {
    repository: String,
    tag: String,
}

impl Reference {
    /// Parses and checks a reference; the tag defaults to `latest`. Digests are refused.
    fn parse(s: &str) -> Result<Reference, String> {
        if s.contains('@') {
            return Err(format!(
                "--name {s:?}: a digest cannot be given, only a tag"
            ));
        }
        // A ':' after the last '/' separates the tag (a ':' before it is a registry port).
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match s[slash..].rfind(':') {
            Some(i) => (&s[..slash + i], &s[slash + i + 1..]),
            None => (s, "latest"),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !tag_ok {
            return Err(format!(
                "--name {s:?}: tag {tag:?} must be 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
            ));
        }
        let path_ok = |p: &str| {
            !p.is_empty()
                && p.split('/').all(|c| {
                    !c.is_empty()
                        && c.chars().all(|ch| {
                            ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                        })
                        && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                        && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
                })
        };
        let (registry, path) = split_registry(repository);
        if !path_ok(path) || registry.is_some_and(|r| r.contains('/')) {
            return Err(format!(
                "--name {s:?}: repository {repository:?} must be lowercase path components of a-z 0-9 . _ -"
            ));
        }
        Ok(Reference {
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The fully qualified name containerd uses, e.g. `docker.io/skylark/preprocess:0.1.0`.
    fn full_name(&self) -> String {
        match split_registry(&self.repository) {
            (Some(_), _) => format!("{}:{}", self.repository, self.tag),
            (None, path) if path.contains('/') => format!("docker.io/{path}:{}", self.tag),
            (None, path) => format!("docker.io/library/{path}:{}", self.tag),
        }
    }
}

/// Splits a leading registry (a first component with `.` or `:`, or `localhost`) off.
fn split_registry(repository: &str) -> (Option<&str>, &str) {
    match repository.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, repository),
    }
}

/// An OCI platform `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric());
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "--platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64"
            )),
        }
    }

    /// This machine's Linux platform in OCI (Go) architecture names.
    fn host() -> Result<Platform, String> {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            other => {
                return Err(format!(
                    "no OCI name known for this machine's architecture {other}; give --platform"
                ))
            }
        };
        Ok(Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        })
    }

    fn to_json(&self) -> Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

/// Parses a comma-separated platform list, refusing duplicates.
fn parse_platforms(s: &str) -> Result<Vec<Platform>, String> {
    let mut out: Vec<Platform> = Vec::new();
    for p in s.split(',') {
        let p = Platform::parse(p)?;
        if out.contains(&p) {
            return Err(format!("--platform {s:?} names a platform twice"));
        }
        out.push(p);
    }
    Ok(out)
}

/// One file of a layer.
struct LayerFile {
    /// Path inside the image, without leading `/`.
    path: String,
    mode: u32,
    bytes: Vec<u8>,
}

/// The contents of one layer.
#[derive(Default)]
struct Layer {
    files: Vec<LayerFile>,
    /// Symbolic links (path without leading `/`, target) and directories of the layer
    /// besides the parents of its files.
    links: Vec<(String, String)>,
    dirs: Vec<String>,
}

impl Layer {
    fn of_files(files: Vec<LayerFile>) -> Layer {
        Layer {
            files,
            ..Layer::default()
        }
    }
}

/// Everything an image is made of.
struct ImageSpec {
    reference: Reference,
    /// One manifest per platform, with the index of its layer in `layers`.
    images: Vec<(Platform, usize)>,
    layers: Vec<Layer>,
    /// The config's `config` object (Entrypoint, Env, Labels...).
    runtime_config: Value,
    /// Annotations of the manifests and of the index entry.
    annotations: BTreeMap<String, String>,
}

/// Every platform with the one layer they share.
fn shared_layer(platforms: Vec<Platform>, layer: Layer) -> (Vec<(Platform, usize)>, Vec<Layer>) {
    (platforms.into_iter().map(|p| (p, 0)).collect(), vec![layer])
}

/// Reads a file into memory, naming it in the error.
fn read_input(path: &str, what: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{what} {path}: {e}"))
}

/// The spec of `oci-image wasm`.
fn wasm_spec(flags: &Flags) -> Result<ImageSpec, String> {
    let wasm_path = flags.required("wasm")?;
    let bytes = read_input(wasm_path, "--wasm")?;
    if !bytes.starts_with(b"\0asm") {
        return Err(format!(
            "--wasm {wasm_path}: not a WebAssembly module (no \\0asm magic); crun's compat-smart \
             mode would run it natively"
        ));
    }
    let file_name = Path::new(wasm_path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".wasm") && !n.contains(char::is_whitespace))
        .ok_or_else(|| {
            format!("--wasm {wasm_path}: the file name must end in .wasm and have no spaces")
        })?
        .to_string();
    let platforms = parse_platforms(flags.get("platform").unwrap_or("linux/amd64,linux/arm64"))?;
    let entrypoint = format!("/{file_name}");
    let (images, layers) = shared_layer(
        platforms,
        Layer::of_files(vec![LayerFile {
            path: file_name,
            mode: 0o755,
            bytes,
        }]),
    );
    Ok(ImageSpec {
        reference: Reference::parse(flags.required("name")?)?,
        images,
        layers,
        runtime_config: json!({
            "Entrypoint": [entrypoint],
            "Env": ["PATH=/"],
            "WorkingDir": "/",
            "Labels": { VARIANT_KEY: VARIANT_VALUE },
        }),
        annotations: BTreeMap::from([(VARIANT_KEY.to_string(), VARIANT_VALUE.to_string())]),
    })
}

/// The spec of `oci-image plugin`.
fn plugin_spec(flags: &Flags) -> Result<ImageSpec, String> {
    let so_path = flags.required("so")?;
    let so = read_input(so_path, "--so")?;
    if !so.starts_with(b"\x7fELF") {
        return Err(format!("--so {so_path}: not an ELF shared object"));
    }
    let platforms = match flags.get("platform") {
        Some(p) => parse_platforms(p)?,
        None => vec![Platform::host()?],
    };
    if platforms.len() != 1 {
        return Err("the plugin is native code: give exactly one --platform".into());
    }
    let mut files = vec![LayerFile {
        path: PLUGIN_PATH.into(),
        mode: 0o644,
        bytes: so,
    }];
    let mut runtime_config = json!({
        "Env": ["PATH=/bin"],
        "WorkingDir": "/",
        "Labels": { "org.skylark.plugin.path": format!("/{PLUGIN_PATH}") },
    });
    if let Some(busybox_path) = flags.get("busybox") {
        let busybox = read_input(busybox_path, "--busybox")?;
        if !busybox.starts_with(b"\x7fELF") {
            return Err(format!("--busybox {busybox_path}: not an ELF executable"));
        }
        files.push(LayerFile {
            path: BUSYBOX_PATH.into(),
            mode: 0o755,
            bytes: busybox,
        });
        runtime_config["Entrypoint"] = json!([format!("/{BUSYBOX_PATH}")]);
        runtime_config["Cmd"] = json!(["sh"]);
    }
    let (images, layers) = shared_layer(platforms, Layer::of_files(files));
    Ok(ImageSpec {
        reference: Reference::parse(flags.required("name")?)?,
        images,
        layers,
        runtime_config,
        annotations: BTreeMap::new(),
    })
}

/// The spec of `oci-image static`.
fn static_spec(flags: &Flags) -> Result<ImageSpec, String> {
    let bin_path = flags.required("bin")?;
    let bytes = read_input(bin_path, "--bin")?;
    if !bytes.starts_with(b"\x7fELF") {
        return Err(format!("--bin {bin_path}: not an ELF executable"));
    }
    let file_name = Path::new(bin_path)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .ok_or_else(|| format!("--bin {bin_path}: the file name must have no spaces"))?
        .to_string();
    let platforms = match flags.get("platform") {
        Some(p) => parse_platforms(p)?,
        None => vec![Platform::host()?],
    };
    if platforms.len() != 1 {
        return Err("--bin is native code: give exactly one --platform".into());
    }
    let entrypoint = format!("/{file_name}");
    let (images, layers) = shared_layer(
        platforms,
        Layer::of_files(vec![LayerFile {
            path: file_name,
            mode: 0o755,
            bytes,
        }]),
    );
    Ok(ImageSpec {
        reference: Reference::parse(flags.required("name")?)?,
        images,
        layers,
        runtime_config: json!({
            "Entrypoint": [entrypoint],
            "Env": ["PATH=/"],
            "WorkingDir": "/",
        }),
        annotations: BTreeMap::new(),
    })
}

/// The spec of `oci-image rootfs`.
fn rootfs_spec(flags: &Flags) -> Result<ImageSpec, String> {
    let entrypoint = flags.required("entrypoint")?;
    if !entrypoint.starts_with('/') {
        return Err(format!(
            "--entrypoint {entrypoint}: must be an absolute path"
        ));
    }
    let env = flags.get("env").unwrap_or("PATH=/usr/bin:/bin");
    if !env.contains('=') {
        return Err(format!("--env {env}: must be NAME=VALUE"));
    }
    let roots = rootfs_dirs(flags)?;
    let inside = entrypoint.trim_start_matches('/');
    let mut images = Vec::new();
    let mut layers = Vec::new();
    for (platform, dir) in roots {
        let mut tree = Layer::default();
        walk(&dir, &dir, &mut tree)?;
        if !tree
            .files
            .iter()
            .any(|f| f.path == inside && f.mode & 0o111 != 0)
        {
            return Err(format!(
                "--entrypoint {entrypoint}: no executable file there in {}",
                dir.display()
            ));
        }
        images.push((platform, layers.len()));
        layers.push(tree);
    }
    Ok(ImageSpec {
        reference: Reference::parse(flags.required("name")?)?,
        images,
        layers,
        runtime_config: json!({
            "Entrypoint": [entrypoint],
            "Env": [env],
            "WorkingDir": "/",
        }),
        annotations: BTreeMap::new(),
    })
}

/// The root directory of each platform of `oci-image rootfs`: one `--dir DIR` (platform
/// from `--platform`, default the machine's own), or `--dir OS/ARCH=DIR` once per platform.
fn rootfs_dirs(flags: &Flags) -> Result<Vec<(Platform, PathBuf)>, String> {
    let dirs = flags.all("dir");
    // "OS/ARCH=DIR": a platform before the first '='; a plain path has none.
    let tagged = |d: &str| {
        d.split_once('=')
            .filter(|(p, _)| p.contains('/'))
            .and_then(|(p, dir)| Platform::parse(p).ok().map(|p| (p, PathBuf::from(dir))))
    };
    match dirs {
        [] => Err(format!("--dir is required\n{USAGE}")),
        [one] if tagged(one).is_none() => {
            let platforms = match flags.get("platform") {
                Some(p) => parse_platforms(p)?,
                None => vec![Platform::host()?],
            };
            match <[Platform; 1]>::try_from(platforms) {
                Ok([p]) => Ok(vec![(p, PathBuf::from(one))]),
                Err(_) => Err(
                    "a root file system is native code: give exactly one --platform, \
                     or one --dir OS/ARCH=DIR per platform"
                        .into(),
                ),
            }
        }
        many => {
            if flags.get("platform").is_some() {
                return Err("--dir OS/ARCH=DIR names the platforms: give no --platform".into());
            }
            let mut out: Vec<(Platform, PathBuf)> = Vec::new();
            for d in many {
                let (platform, dir) = tagged(d).ok_or_else(|| {
                    format!("--dir {d}: with several --dir, each must be OS/ARCH=DIR")
                })?;
                if out.iter().any(|(p, _)| *p == platform) {
                    return Err(format!("--dir {d}: a second root for that platform"));
                }
                out.push((platform, dir));
            }
            Ok(out)
        }
    }
}

/// Adds everything under `dir` (a directory inside `root`) to `tree`, paths relative to
/// `root`.
fn walk(root: &Path, dir: &Path, tree: &mut Layer) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .to_str()
            .ok_or_else(|| format!("{}: the path is not UTF-8", path.display()))?
            .to_string();
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let target = target
                .to_str()
                .ok_or_else(|| format!("{}: the link target is not UTF-8", path.display()))?;
            tree.links.push((rel, target.to_string()));
        } else if kind.is_dir() {
            tree.dirs.push(rel);
            walk(root, &path, tree)?;
        } else if kind.is_file() {
            let bytes = read_input(&path.display().to_string(), "--dir")?;
            tree.files.push(LayerFile {
                path: rel,
                mode: meta.permissions().mode() & 0o7777,
                bytes,
            });
        } else {
            return Err(format!(
                "{}: not a file, directory or symbolic link",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The ELF machine (`e_machine`) of native code for a Linux platform, with its name; `None`
/// for other platforms (`wasi/wasm`) and architectures this tool does not know.
fn platform_machine(platform: &Platform) -> Option<(u16, &'static str)> {
    if platform.os != "linux" {
        return None;
    }
    Some(match platform.architecture.as_str() {
        "amd64" => (62, "x86-64"),
        "arm64" => (183, "AArch64"),
        "arm" => (40, "ARM"),
        "386" => (3, "i386"),
        "riscv64" => (243, "RISC-V"),
        "ppc64le" => (21, "PowerPC64"),
        "s390x" => (22, "S/390"),
        _ => return None,
    })
}

/// The `e_machine` of an ELF file (either byte order), `None` for anything else.
fn elf_machine(bytes: &[u8]) -> Option<u16> {
    if !bytes.starts_with(b"\x7fELF") || bytes.len() < 20 {
        return None;
    }
    let field = [bytes[18], bytes[19]];
    match bytes[5] {
        1 => Some(u16::from_le_bytes(field)),
        2 => Some(u16::from_be_bytes(field)),
        _ => None,
    }
}

/// Refuses a layer for `platform` that holds an ELF file built for another machine.
fn check_native_code(platform: &Platform, layer: &Layer) -> Result<(), String> {
    let Some((want, name)) = platform_machine(platform) else {
        return Ok(());
    };
    for f in &layer.files {
        match elf_machine(&f.bytes) {
            Some(m) if m != want => {
                let got = [62, 183, 40, 3, 243, 21, 22]
                    .into_iter()
                    .zip([
                        "x86-64",
                        "AArch64",
                        "ARM",
                        "i386",
                        "RISC-V",
                        "PowerPC64",
                        "S/390",
                    ])
                    .find(|(k, _)| *k == m)
                    .map_or("unknown", |(_, n)| n);
                return Err(format!(
                    "/{}: ELF machine {m} ({got}), not {name}: it cannot run on {}/{}",
                    f.path, platform.os, platform.architecture
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `sha256:<hex>` of `bytes`.
fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A new tar header for a deterministic entry: mtime 0, uid/gid 0, no user names.
fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A deterministic tar of `files` (paths relative, no leading `/`) with every parent
/// directory as its own entry, all sorted by path.
fn deterministic_tar(files: &[(String, u32, &[u8])]) -> Result<Vec<u8>, String> {
    layer_tar(files, &[], &[])
}

/// One entry of a layer.
enum Entry<'a> {
    Dir,
    File(u32, &'a [u8]),
    Link(&'a str),
}

/// `deterministic_tar` with symbolic links (path, target) and extra directories.
fn layer_tar(
    files: &[(String, u32, &[u8])],
    links: &[(String, String)],
    dirs: &[String],
) -> Result<Vec<u8>, String> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let all_paths = files
        .iter()
        .map(|f| &f.0)
        .chain(links.iter().map(|l| &l.0))
        .chain(dirs.iter());
    for path in all_paths {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            entries.insert(format!("{}/", dir.display()), Entry::Dir);
            parent = dir.parent();
        }
    }
    for dir in dirs {
        entries.insert(format!("{dir}/"), Entry::Dir);
    }
    for (path, mode, bytes) in files {
        if entries
            .insert(path.clone(), Entry::File(*mode, bytes))
            .is_some()
        {
            return Err(format!("{path} appears twice in a layer"));
        }
    }
    for (path, target) in links {
        if entries.insert(path.clone(), Entry::Link(target)).is_some() {
            return Err(format!("{path} appears twice in a layer"));
        }
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &entries {
        match entry {
            Entry::Link(target) => {
                let mut header = tar_header(tar::EntryType::Symlink, 0o777, 0);
                builder
                    .append_link(&mut header, path, target)
                    .map_err(|e| format!("tar entry {path}: {e}"))?;
                continue;
            }
            Entry::Dir => {
                let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut header, path, &[][..])
                    .map_err(|e| format!("tar entry {path}: {e}"))?;
            }
            Entry::File(mode, bytes) => {
                let mut header = tar_header(tar::EntryType::Regular, *mode, bytes.len() as u64);
                builder
                    .append_data(&mut header, path, *bytes)
                    .map_err(|e| format!("tar entry {path}: {e}"))?;
            }
        }
    }
    builder
        .into_inner()
        .map_err(|e| format!("finishing tar: {e}"))
}

/// Gzip without file name or timestamp, so equal input gives equal output.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    enc.write_all(bytes)
        .and_then(|_| enc.finish())
        .map_err(|e| format!("gzip: {e}"))
}

/// Blobs of a layout being written, by digest.
#[derive(Default)]
struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    /// Adds a blob and returns its descriptor.
    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Value {
        let d = digest(&bytes);
        let desc = json!({"mediaType": media_type, "digest": d, "size": bytes.len()});
        self.0.insert(d, bytes);
        desc
    }

    /// Adds a JSON document (compact, keys sorted) and returns its descriptor.
    fn add_json(&mut self, media_type: &str, doc: &Value) -> Result<Value, String> {
        let bytes = serde_json::to_vec(doc).map_err(|e| format!("encoding {media_type}: {e}"))?;
        Ok(self.add(media_type, bytes))
    }
}

/// What [`write_layout`] produced.
struct Built {
    index_digest: String,
    /// The first (usually the only) layer's digest.
    layer_digest: String,
    /// Every layer's digest, in the order of the manifests that use them.
    layers: Vec<String>,
    manifests: Vec<String>,
}

/// Builds the image's blobs and writes the OCI layout to `out`.
fn write_layout(spec: &ImageSpec, out: &Path) -> Result<Built, String> {
    let mut blobs = Blobs::default();
    // (diff_id, descriptor) of each layer.
    let mut layers = Vec::new();
    for layer in &spec.layers {
        let files: Vec<(String, u32, &[u8])> = layer
            .files
            .iter()
            .map(|f| (f.path.clone(), f.mode, f.bytes.as_slice()))
            .collect();
        let tar_bytes = layer_tar(&files, &layer.links, &layer.dirs)?;
        layers.push((digest(&tar_bytes), blobs.add(MT_LAYER, gzip(&tar_bytes)?)));
    }
    let annotations = json!(spec.annotations);

    let mut manifest_descs = Vec::new();
    let mut used_layers = Vec::new();
    for (platform, li) in &spec.images {
        let (Some(content), Some((diff_id, layer))) = (spec.layers.get(*li), layers.get(*li))
        else {
            return Err(format!(
                "no layer {li} for {}/{}",
                platform.os, platform.architecture
            ));
        };
        check_native_code(platform, content)?;
        if let Some(d) = layer["digest"].as_str() {
            if !used_layers.iter().any(|u| u == d) {
                used_layers.push(d.to_string());
            }
        }
        let mut config = json!({
            "created": "1970-01-01T00:00:00Z",
            "architecture": platform.architecture,
            "os": platform.os,
            "config": spec.runtime_config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "oci-image (skylark)"}],
        });
        if let Some(v) = &platform.variant {
            config["variant"] = json!(v);
        }
        let config_desc = blobs.add_json(MT_CONFIG, &config)?;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": config_desc,
            "layers": [layer],
        });
        if !spec.annotations.is_empty() {
            manifest["annotations"] = annotations.clone();
        }
        let mut desc = blobs.add_json(MT_MANIFEST, &manifest)?;
        desc["platform"] = platform.to_json();
        manifest_descs.push(desc);
    }
    let manifests: Vec<String> = manifest_descs
        .iter()
        .filter_map(|d| d["digest"].as_str().map(str::to_string))
        .collect();
    let mut image_index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": manifest_descs,
    });
    if !spec.annotations.is_empty() {
        image_index["annotations"] = annotations;
    }
    let mut index_desc = blobs.add_json(MT_INDEX, &image_index)?;
    let mut ref_annotations = spec.annotations.clone();
    ref_annotations.insert(
        "org.opencontainers.image.ref.name".into(),
        spec.reference.tag.clone(),
    );
    ref_annotations.insert(
        "io.containerd.image.name".into(),
        spec.reference.full_name(),
    );
    index_desc["annotations"] = json!(ref_annotations);
    let top = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [index_desc]});

    prepare_out_dir(out)?;
    let blob_dir = out.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(|e| format!("creating {}: {e}", blob_dir.display()))?;
    for (d, bytes) in &blobs.0 {
        let hex = d.trim_start_matches("sha256:");
        write_file(&blob_dir.join(hex), bytes)?;
    }
    write_file(
        &out.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let top_bytes = serde_json::to_vec(&top).map_err(|e| format!("encoding index.json: {e}"))?;
    write_file(&out.join("index.json"), &top_bytes)?;
    Ok(Built {
        index_digest: index_desc["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        layer_digest: used_layers.first().cloned().unwrap_or_default(),
        layers: used_layers,
        manifests,
    })
}

/// Makes `out` an empty directory: creates it, or clears an earlier layout there. Refuses
/// a non-empty directory that is not an OCI layout, so a typo cannot wipe other files.
fn prepare_out_dir(out: &Path) -> Result<(), String> {
    if !out.exists() {
        return fs::create_dir_all(out).map_err(|e| format!("creating {}: {e}", out.display()));
    }
    let entries: Vec<PathBuf> = fs::read_dir(out)
        .map_err(|e| format!("reading --out {}: {e}", out.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading --out {}: {e}", out.display()))?;
    if entries.is_empty() {
        return Ok(());
    }
    if !out.join("oci-layout").is_file() {
        return Err(format!(
            "--out {} exists, is not empty and is not an OCI layout; refusing to overwrite it",
            out.display()
        ));
    }
    for name in ["blobs", "index.json", "oci-layout"] {
        let p = out.join(name);
        let result = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else if p.exists() {
            fs::remove_file(&p)
        } else {
            Ok(())
        };
        result.map_err(|e| format!("removing the old {}: {e}", p.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes the layout at `dir` as one deterministic tar at `tar_path`.
fn write_layout_tar(dir: &Path, tar_path: &Path) -> Result<(), String> {
    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for name in ["oci-layout", "index.json"] {
        files.push((
            name.into(),
            0o644,
            fs::read(dir.join(name))
                .map_err(|e| format!("reading {}: {e}", dir.join(name).display()))?,
        ));
    }
    let blob_dir = dir.join("blobs").join("sha256");
    let read =
        fs::read_dir(&blob_dir).map_err(|e| format!("reading {}: {e}", blob_dir.display()))?;
    for entry in read {
        let entry = entry.map_err(|e| format!("reading {}: {e}", blob_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(entry.path())
            .map_err(|e| format!("reading {}: {e}", entry.path().display()))?;
        files.push((format!("blobs/sha256/{name}"), 0o644, bytes));
    }
    let refs: Vec<(String, u32, &[u8])> = files
        .iter()
        .map(|(p, m, b)| (p.clone(), *m, b.as_slice()))
        .collect();
    let tar = deterministic_tar(&refs)?;
    write_file(tar_path, &tar)
}
