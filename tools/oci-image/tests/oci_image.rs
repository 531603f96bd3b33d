//! The `oci-image` tool (src/bin/oci_image.rs): builds images from a small fake `.wasm` and
//! `.so` and inspects the OCI layouts it writes: index -> image index -> manifest ->
//! config and layer, every digest and size, the layer's files, the entrypoint, the
//! annotation, the layout tar, that equal inputs give equal digests, and the
//! multi-architecture root file system image (an index with an amd64 and an arm64
//! manifest, each layer holding only native code of its platform's ELF machine). No
//! wasmedge, Docker or registry needed.

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOOL: &str = env!("CARGO_BIN_EXE_oci-image");

fn oci_image(args: &[&str]) -> Output {
    Command::new(TOOL)
        .args(args)
        .output()
        .expect("run oci-image")
}

fn ok(args: &[&str]) -> Value {
    let out = oci_image(args);
    assert!(
        out.status.success(),
        "oci-image {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary is JSON")
}

fn sha256(bytes: &[u8]) -> String {
    let h = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Reads the blob a descriptor names, checking its size and digest.
fn blob(dir: &Path, desc: &Value) -> Vec<u8> {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let bytes = fs::read(dir.join("blobs/sha256").join(hex)).expect("blob exists");
    assert_eq!(
        desc["size"].as_u64(),
        Some(bytes.len() as u64),
        "{digest} size"
    );
    assert_eq!(sha256(&bytes), digest, "blob content matches its digest");
    bytes
}

fn json_blob(dir: &Path, desc: &Value, media_type: &str) -> Value {
    assert_eq!(desc["mediaType"], media_type);
    let doc: Value = serde_json::from_slice(&blob(dir, desc)).expect("blob is JSON");
    if media_type != "application/vnd.oci.image.config.v1+json" {
        assert_eq!(doc["schemaVersion"], 2);
        assert_eq!(doc["mediaType"], media_type);
    }
    doc
}

/// Entries of a tar: path -> (mode, is_dir, bytes).
fn tar_entries(bytes: &[u8]) -> BTreeMap<String, (u32, bool, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let h = entry.header().clone();
        assert_eq!(h.mtime().unwrap(), 0, "mtime fixed");
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let is_dir = h.entry_type().is_dir();
        out.insert(path, (h.mode().unwrap(), is_dir, data));
    }
    out
}

/// An inspected image: (platform, config, uncompressed layer) per manifest, plus the
/// top-level index entry.
struct Image {
    entry: Value,
    images: Vec<(Value, Value, Value, Vec<u8>)>,
}

/// Walks the layout: index.json -> image index -> manifests -> config and layer.
fn inspect(dir: &Path) -> Image {
    let layout: Value = serde_json::from_slice(&fs::read(dir.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let top: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["schemaVersion"], 2);
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "one image in the layout");
    let entry = entries[0].clone();
    let index = json_blob(dir, &entry, "application/vnd.oci.image.index.v1+json");
    let mut images = Vec::new();
    for desc in index["manifests"].as_array().unwrap() {
        let manifest = json_blob(dir, desc, "application/vnd.oci.image.manifest.v1+json");
        let config = json_blob(
            dir,
            &manifest["config"],
            "application/vnd.oci.image.config.v1+json",
        );
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "one layer");
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        let mut layer = Vec::new();
        GzDecoder::new(blob(dir, &layers[0]).as_slice())
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([sha256(&layer)]),
            "diff_id is the digest of the uncompressed layer"
        );
        assert_eq!(config["os"], desc["platform"]["os"]);
        assert_eq!(config["architecture"], desc["platform"]["architecture"]);
        images.push((desc["platform"].clone(), manifest, config, layer));
    }
    Image { entry, images }
}

struct Fixture {
    dir: tempfile::TempDir,
    wasm: PathBuf,
    /// A fake aarch64 shared object and executable, and an x86-64 executable.
    so: PathBuf,
    busybox: PathBuf,
    busybox_amd64: PathBuf,
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// A fake 64-bit little-endian ELF file for `machine`, `len` bytes, its filler `fill`.
fn elf(machine: u16, fill: u8, len: usize) -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01".to_vec();
    bytes.resize(len, fill);
    bytes[18..20].copy_from_slice(&machine.to_le_bytes());
    bytes
}

/// The `e_machine` of a 64-bit little-endian ELF file, `None` for anything else.
fn elf_machine(bytes: &[u8]) -> Option<u16> {
    (bytes.starts_with(b"\x7fELF") && bytes.len() >= 20 && bytes[5] == 1)
        .then(|| u16::from_le_bytes([bytes[18], bytes[19]]))
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("preprocess.wasm");
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend((0u8..=255).cycle().take(3000));
    fs::write(&wasm, module).unwrap();
    let so = dir.path().join("libwasmedgePluginSkylark.so");
    fs::write(&so, elf(EM_AARCH64, 7, 5000)).unwrap();
    let busybox = dir.path().join("busybox");
    fs::write(&busybox, elf(EM_AARCH64, 42, 5000)).unwrap();
    let amd64_dir = dir.path().join("amd64");
    fs::create_dir(&amd64_dir).unwrap();
    let busybox_amd64 = amd64_dir.join("busybox");
    fs::write(&busybox_amd64, elf(EM_X86_64, 42, 5000)).unwrap();
    Fixture {
        dir,
        wasm,
        so,
        busybox,
        busybox_amd64,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn wasm_image_has_the_module_entrypoint_annotation_and_platforms() {
    let f = fixture();
    let out = f.dir.path().join("img");
    let summary = ok(&[
        "wasm",
        "--wasm",
        s(&f.wasm),
        "--name",
        "skylark/preprocess:0.1.0",
        "--out",
        s(&out),
    ]);
    assert_eq!(summary["name"], "docker.io/skylark/preprocess:0.1.0");
    let img = inspect(&out);
    let ann = &img.entry["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], "0.1.0");
    assert_eq!(
        ann["io.containerd.image.name"],
        "docker.io/skylark/preprocess:0.1.0"
    );
    assert_eq!(ann["module.wasm.image/variant"], "compat-smart");

    let platforms: Vec<String> = img
        .images
        .iter()
        .map(|(p, ..)| {
            format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    let wasm_bytes = fs::read(&f.wasm).unwrap();
    for (_, manifest, config, layer) in &img.images {
        assert_eq!(
            manifest["annotations"]["module.wasm.image/variant"],
            "compat-smart"
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/preprocess.wasm"])
        );
        assert_eq!(
            config["config"]["Labels"]["module.wasm.image/variant"],
            "compat-smart"
        );
        let entries = tar_entries(layer);
        assert_eq!(entries.len(), 1, "exactly one file: {:?}", entries.keys());
        let (mode, is_dir, bytes) = &entries["preprocess.wasm"];
        assert!(!is_dir);
        assert_eq!(*mode, 0o755);
        assert_eq!(bytes, &wasm_bytes);
    }
    // Both platforms share the one layer blob.
    assert_eq!(
        img.images[0].1["layers"][0]["digest"],
        img.images[1].1["layers"][0]["digest"]
    );
}

#[test]
fn plugin_image_holds_the_plugin_and_busybox() {
    let f = fixture();
    let out = f.dir.path().join("plugin");
    ok(&[
        "plugin",
        "--so",
        s(&f.so),
        "--busybox",
        s(&f.busybox),
        "--platform",
        "linux/arm64",
        "--name",
        "registry.local:5000/skylark/plugin-installer:0.1.0",
        "--out",
        s(&out),
    ]);
    let img = inspect(&out);
    assert_eq!(
        img.entry["annotations"]["io.containerd.image.name"],
        "registry.local:5000/skylark/plugin-installer:0.1.0"
    );
    assert_eq!(img.images.len(), 1);
    let (platform, _, config, layer) = &img.images[0];
    assert_eq!(platform["architecture"], "arm64");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/busybox"])
    );
    let entries = tar_entries(layer);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bin/",
            "bin/busybox",
            "skylark/",
            "skylark/libwasmedgePluginSkylark.so"
        ]
    );
    assert_eq!(
        entries["skylark/libwasmedgePluginSkylark.so"].2,
        fs::read(&f.so).unwrap()
    );
    assert_eq!(entries["bin/busybox"].2, fs::read(&f.busybox).unwrap());
    assert_eq!(entries["bin/busybox"].0, 0o755);
    assert!(entries["skylark/"].1);
}

#[test]
fn static_image_runs_its_one_executable() {
    let f = fixture();
    let out = f.dir.path().join("pause");
    let summary = ok(&[
        "static",
        "--bin",
        s(&f.busybox_amd64),
        "--platform",
        "linux/amd64",
        "--name",
        "skylark/pause:0.1.0",
        "--out",
        s(&out),
    ]);
    assert_eq!(summary["name"], "docker.io/skylark/pause:0.1.0");
    let img = inspect(&out);
    assert_eq!(img.images.len(), 1);
    let (platform, manifest, config, layer) = &img.images[0];
    assert_eq!(platform["architecture"], "amd64");
    assert!(manifest["annotations"]["module.wasm.image/variant"].is_null());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/busybox"])
    );
    let entries = tar_entries(layer);
    assert_eq!(entries.len(), 1, "exactly one file: {:?}", entries.keys());
    assert_eq!(entries["busybox"].0, 0o755);
    assert_eq!(entries["busybox"].2, fs::read(&f.busybox_amd64).unwrap());
    // A wasm module is not a native executable.
    let refused = oci_image(&[
        "static",
        "--bin",
        s(&f.wasm),
        "--name",
        "x",
        "--out",
        s(&f.dir.path().join("no")),
    ]);
    assert!(!refused.status.success());
}

#[test]
fn rootfs_image_keeps_modes_links_and_empty_directories() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let f = fixture();
    let root = f.dir.path().join("root");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("skylark")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    fs::copy(&f.busybox, root.join("usr/bin/busybox")).unwrap();
    fs::set_permissions(
        root.join("usr/bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("busybox", root.join("usr/bin/sh")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    fs::write(root.join("skylark/install.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("skylark/install.sh"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    fs::write(root.join("skylark/data"), "data").unwrap();
    fs::set_permissions(root.join("skylark/data"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = f.dir.path().join("rootfs-image");
    let args = [
        "rootfs",
        "--dir",
        s(&root),
        "--entrypoint",
        "/skylark/install.sh",
        "--env",
        "PATH=/usr/bin",
        "--platform",
        "linux/arm64",
        "--name",
        "skylark/shim-installer:0.1.0",
        "--out",
        s(&out),
    ];
    let summary = ok(&args);
    assert_eq!(summary["name"], "docker.io/skylark/shim-installer:0.1.0");
    let img = inspect(&out);
    let (platform, _, config, layer) = &img.images[0];
    assert_eq!(platform["architecture"], "arm64");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/skylark/install.sh"])
    );
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/usr/bin"])
    );
    let entries = tar_entries(layer);
    assert_eq!(entries["skylark/install.sh"].0, 0o750);
    assert_eq!(entries["skylark/data"].0, 0o600);
    assert_eq!(entries["skylark/data"].2, b"data");
    assert_eq!(entries["usr/bin/busybox"].0, 0o755);
    assert!(entries["tmp/"].1, "the empty directory is kept");
    let mut links = BTreeMap::new();
    let layer_bytes = layer.as_slice();
    for entry in tar::Archive::new(layer_bytes).entries().unwrap() {
        let entry = entry.unwrap();
        if entry.header().entry_type().is_symlink() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let target = entry
                .link_name()
                .unwrap()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            links.insert(path, target);
        }
    }
    assert_eq!(links.get("usr/bin/sh").map(String::as_str), Some("busybox"));
    assert_eq!(links.get("bin").map(String::as_str), Some("usr/bin"));
    // Reproducible: the same tree gives the same digest.
    let again = ok(&[&args[..12], &[s(&f.dir.path().join("rootfs-again"))]].concat());
    assert_eq!(summary["index"], again["index"]);
    // The entrypoint must be an executable file of the tree.
    let refused = oci_image(&[
        "rootfs",
        "--dir",
        s(&root),
        "--entrypoint",
        "/skylark/data",
        "--name",
        "x",
        "--out",
        s(&f.dir.path().join("no")),
    ]);
    assert!(!refused.status.success());
}

#[test]
fn builds_are_reproducible_and_the_tar_holds_the_layout() {
    let f = fixture();
    let mut digests = Vec::new();
    for run in ["a", "b"] {
        let out = f.dir.path().join(run);
        let tar = f.dir.path().join(format!("{run}.tar"));
        let summary = ok(&[
            "wasm",
            "--wasm",
            s(&f.wasm),
            "--name",
            "skylark/detect",
            "--out",
            s(&out),
            "--tar",
            s(&tar),
        ]);
        digests.push((summary["index"].clone(), summary["manifests"].clone()));
        // The tar holds exactly the layout's files, byte for byte.
        let entries = tar_entries(&fs::read(&tar).unwrap());
        let mut files = 0;
        for (path, (_, is_dir, bytes)) in &entries {
            if !is_dir {
                assert_eq!(bytes, &fs::read(out.join(path)).unwrap(), "{path}");
                files += 1;
            }
        }
        let blobs = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
        assert_eq!(files, blobs + 2, "oci-layout, index.json and every blob");
        let img = inspect(&out);
        assert_eq!(
            img.entry["annotations"]["org.opencontainers.image.ref.name"],
            "latest"
        );
    }
    assert_eq!(digests[0], digests[1], "same input, same digests");
    assert_eq!(
        fs::read(f.dir.path().join("a.tar")).unwrap(),
        fs::read(f.dir.path().join("b.tar")).unwrap()
    );

    // Rebuilding into an existing layout replaces it; other directories are refused.
    let again = ok(&[
        "wasm",
        "--wasm",
        s(&f.wasm),
        "--name",
        "skylark/detect",
        "--out",
        s(&f.dir.path().join("a")),
    ]);
    assert_eq!(again["index"], digests[0].0);
    let busy = f.dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("notes.txt"), "keep").unwrap();
    let out = oci_image(&[
        "wasm",
        "--wasm",
        s(&f.wasm),
        "--name",
        "x/y",
        "--out",
        s(&busy),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing"));
    assert!(busy.join("notes.txt").exists());
}

#[test]
fn bad_inputs_are_reported() {
    let f = fixture();
    let out = f.dir.path().join("o");
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "wasm",
                "--wasm",
                s(&f.so),
                "--name",
                "a/b",
                "--out",
                s(&out),
            ],
            "not a WebAssembly module",
        ),
        (
            &[
                "plugin",
                "--so",
                s(&f.wasm),
                "--name",
                "a/b",
                "--out",
                s(&out),
            ],
            "not an ELF",
        ),
        (
            &[
                "wasm",
                "--wasm",
                s(&f.wasm),
                "--name",
                "A/B:1",
                "--out",
                s(&out),
            ],
            "lowercase",
        ),
        (
            &[
                "wasm",
                "--wasm",
                s(&f.wasm),
                "--name",
                "a/b@sha256:00",
                "--out",
                s(&out),
            ],
            "digest",
        ),
        (
            &[
                "wasm",
                "--wasm",
                s(&f.wasm),
                "--name",
                "a/b",
                "--out",
                s(&out),
                "--platform",
                "linux",
            ],
            "OS/ARCH",
        ),
        (
            &[
                "plugin",
                "--so",
                s(&f.so),
                "--name",
                "a/b",
                "--out",
                s(&out),
                "--platform",
                "linux/amd64,linux/arm64",
            ],
            "exactly one",
        ),
        (
            &[
                "wasm",
                "--wasm",
                "/nonexistent.wasm",
                "--name",
                "a/b",
                "--out",
                s(&out),
            ],
            "/nonexistent.wasm",
        ),
        (
            &["wasm", "--name", "a/b", "--out", s(&out)],
            "--wasm is required",
        ),
        (&["image", "--out", s(&out)], "unknown command"),
        (&["wasm", "--bogus", "1"], "unknown option"),
    ];
    for (args, expected) in cases {
        let o = oci_image(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert!(!out.exists(), "nothing written on errors");
}

/// A small root for `arch`'s machine: an executable, a library and a script.
fn arch_root(base: &Path, name: &str, machine: u16) -> PathBuf {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let root = base.join(name);
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("skylark/lib")).unwrap();
    fs::write(root.join("usr/bin/busybox"), elf(machine, 1, 3000)).unwrap();
    fs::set_permissions(
        root.join("usr/bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    symlink("busybox", root.join("usr/bin/sh")).unwrap();
    fs::write(
        root.join("skylark/lib/libwasmedge.so.0"),
        elf(machine, 2, 4000),
    )
    .unwrap();
    fs::write(root.join("skylark/install.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(
        root.join("skylark/install.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    root
}

#[test]
fn rootfs_image_for_amd64_and_arm64_is_one_index_with_native_layers() {
    let f = fixture();
    let amd64 = arch_root(f.dir.path(), "root-amd64", EM_X86_64);
    let arm64 = arch_root(f.dir.path(), "root-arm64", EM_AARCH64);
    let out = f.dir.path().join("multi");
    let dir_amd64 = format!("linux/amd64={}", s(&amd64));
    let dir_arm64 = format!("linux/arm64={}", s(&arm64));
    let summary = ok(&[
        "rootfs",
        "--dir",
        &dir_amd64,
        "--dir",
        &dir_arm64,
        "--entrypoint",
        "/skylark/install.sh",
        "--name",
        "skylark/shim-installer:0.1.0",
        "--out",
        s(&out),
    ]);
    assert_eq!(summary["manifests"].as_array().map(Vec::len), Some(2));
    assert_eq!(summary["layers"].as_array().map(Vec::len), Some(2));
    let img = inspect(&out);
    let arches: Vec<&str> = img
        .images
        .iter()
        .map(|(p, ..)| p["architecture"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        arches,
        ["amd64", "arm64"],
        "one manifest per platform, in order"
    );
    for (platform, manifest, config, layer) in &img.images {
        assert_eq!(platform["os"], "linux");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/skylark/install.sh"])
        );
        let want = match platform["architecture"].as_str() {
            Some("amd64") => EM_X86_64,
            _ => EM_AARCH64,
        };
        let entries = tar_entries(layer);
        let natives: Vec<(&String, Option<u16>)> = entries
            .iter()
            .filter(|(_, (_, is_dir, bytes))| !is_dir && bytes.starts_with(b"\x7fELF"))
            .map(|(path, (_, _, bytes))| (path, elf_machine(bytes)))
            .collect();
        assert_eq!(natives.len(), 2, "{platform}: {natives:?}");
        for (path, machine) in natives {
            assert_eq!(machine, Some(want), "{platform} layer: {path}");
        }
        assert_eq!(entries["skylark/install.sh"].2, b"#!/bin/sh\necho hi\n");
        assert_eq!(
            manifest["layers"][0]["digest"],
            summary["layers"][if want == EM_X86_64 { 0 } else { 1 }]
        );
    }

    // Roots swapped: each would ship the other machine's code.
    let swapped_amd64 = format!("linux/amd64={}", s(&arm64));
    let swapped_arm64 = format!("linux/arm64={}", s(&amd64));
    let cases: &[(&[&str], &str)] = &[
        (&[&swapped_amd64, &swapped_arm64], "not x86-64"),
        (&[&dir_amd64, &swapped_arm64], "not AArch64"),
        (&[&dir_amd64, &dir_amd64], "a second root for that platform"),
        (&[&dir_amd64, s(&arm64)], "each must be OS/ARCH=DIR"),
    ];
    for (dirs, expected) in cases {
        let mut args = vec!["rootfs"];
        for d in *dirs {
            args.extend(["--dir", d]);
        }
        let no = f.dir.path().join("no");
        args.extend([
            "--entrypoint",
            "/skylark/install.sh",
            "--name",
            "x",
            "--out",
            s(&no),
        ]);
        let o = oci_image(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{dirs:?} should fail");
        assert!(err.contains(expected), "{dirs:?}: {err}");
        assert!(!no.exists(), "nothing written on errors");
    }
    // --platform and tagged roots contradict each other; one plain root for two platforms
    // cannot be native code for both.
    for (dir, platform, expected) in [
        (dir_arm64.as_str(), "linux/arm64", "give no --platform"),
        (
            s(&arm64),
            "linux/amd64,linux/arm64",
            "exactly one --platform",
        ),
    ] {
        let o = oci_image(&[
            "rootfs",
            "--dir",
            dir,
            "--platform",
            platform,
            "--entrypoint",
            "/skylark/install.sh",
            "--name",
            "x",
            "--out",
            s(&f.dir.path().join("no")),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(expected), "{err}");
    }
}

#[test]
fn native_code_of_another_machine_is_refused() {
    let f = fixture();
    // The (aarch64) plugin in an amd64 installer image, the amd64 pause for arm64.
    for (args, expected) in [
        (
            vec!["plugin", "--so", s(&f.so), "--platform", "linux/amd64"],
            "/skylark/libwasmedgePluginSkylark.so: ELF machine 183 (AArch64), not x86-64",
        ),
        (
            vec![
                "static",
                "--bin",
                s(&f.busybox_amd64),
                "--platform",
                "linux/arm64",
            ],
            "/busybox: ELF machine 62 (x86-64), not AArch64",
        ),
    ] {
        let out = f.dir.path().join("no");
        let mut args = args.clone();
        args.extend(["--name", "x", "--out", s(&out)]);
        let o = oci_image(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!out.exists());
    }
}
