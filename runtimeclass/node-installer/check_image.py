#!/usr/bin/env python3
"""Checks the shim installer image's OCI layout (what build-image.sh wrote): the image
index has exactly one manifest per expected platform (linux/amd64, linux/arm64), and in
each platform's layer the native files, the shim, the plugin, libwasmedge, busybox and
python3, are ELF files of that platform's machine; the shim starts with the standard
dynamic loader of a trixie node of that architecture.

usage: check_image.py LAYOUT_DIR ARCH [ARCH...]     (exit 0: all good; 1: what is wrong)
"""
import gzip
import hashlib
import io
import json
import os
import struct
import sys
import tarfile

MACHINE = {"amd64": 62, "arm64": 183}
LOADER = {"amd64": "/lib64/ld-linux-x86-64.so.2", "arm64": "/lib/ld-linux-aarch64.so.1"}
NATIVE = [
    "skylark/containerd-shim-skylark-v1",
    "skylark/libwasmedgePluginSkylark.so",
    "skylark/lib/libwasmedge.so.0",
    "usr/bin/busybox",
]


def blob(layout, desc):
    algo, hexdigest = desc["digest"].split(":", 1)
    with open(os.path.join(layout, "blobs", algo, hexdigest), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != hexdigest or len(data) != desc["size"]:
        raise SystemExit(f"blob {desc['digest']}: digest or size wrong")
    return data


def elf_machine(data):
    if data[:4] != b"\x7fELF" or len(data) < 20 or data[5] != 1:
        return None
    return struct.unpack_from("<H", data, 18)[0]


def interpreter(data):
    """PT_INTERP of a 64-bit little-endian ELF file, or None."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == 3:  # PT_INTERP
            p_offset, = struct.unpack_from("<Q", data, off + 8)
            p_filesz, = struct.unpack_from("<Q", data, off + 32)
            return data[p_offset : p_offset + p_filesz].rstrip(b"\0").decode()
    return None


def main(layout, arches):
    with open(os.path.join(layout, "index.json")) as f:
        top = json.load(f)
    (entry,) = top["manifests"]
    index = json.loads(blob(layout, entry))
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]]
    want = [("linux", a) for a in arches]
    if sorted(platforms) != sorted(want):
        raise SystemExit(f"index platforms {platforms}, expected {want}")
    for desc in index["manifests"]:
        arch = desc["platform"]["architecture"]
        manifest = json.loads(blob(layout, desc))
        config = json.loads(blob(layout, manifest["config"]))
        if config["architecture"] != arch or config["os"] != "linux":
            raise SystemExit(f"{arch}: config says {config['os']}/{config['architecture']}")
        (layer,) = manifest["layers"]
        tar = tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layout, layer))))
        members = {m.name: m for m in tar.getmembers()}
        pythons = [n for n in members if n.startswith("usr/bin/python3.") and members[n].isfile()]
        if not pythons:
            raise SystemExit(f"{arch}: no usr/bin/python3.X in the layer")
        for name in NATIVE + pythons:
            if name not in members or not members[name].isfile():
                raise SystemExit(f"{arch}: {name} missing from the layer")
            data = tar.extractfile(members[name]).read()
            if elf_machine(data) != MACHINE[arch]:
                raise SystemExit(f"{arch}: {name} is ELF machine {elf_machine(data)}, not {MACHINE[arch]}")
        shim = tar.extractfile(members[NATIVE[0]]).read()
        if interpreter(shim) != LOADER[arch]:
            raise SystemExit(f"{arch}: the shim's interpreter is {interpreter(shim)}, not {LOADER[arch]}")
        print(f"{arch}: {layer['digest']}: {len(NATIVE) + len(pythons)} native files of ELF machine {MACHINE[arch]}, shim loader {LOADER[arch]}")


if __name__ == "__main__":
    if len(sys.argv) < 3 or any(a not in MACHINE for a in sys.argv[2:]):
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2:])
