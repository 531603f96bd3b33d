#!/usr/bin/env python3
"""Adds (or updates) one runtime handler in a containerd configuration file, idempotently.

Used by install.sh (the Skylark node installer). The edit goes through tomlkit (Debian's
python3-tomlkit), which keeps comments, order and every other section of the file as they
are. The section depends on the file's config version:

  version = 2 (containerd 1.7):  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.NAME]
  version = 3 (containerd 2.x):  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.NAME]

Only the keys given here are set in the section; other keys of an existing section stay.
A missing file is created as `version = 2` (containerd 2.x converts version 2 itself).
The file is rewritten only when its content changes, through a temporary file and a rename.

  exit 0  the file now has the handler; stdout says "changed" or "unchanged"
  exit 2  the file cannot be edited (unreadable, not TOML, version 1 or unknown)
"""

import argparse
import os
import sys
import tempfile

import tomlkit
from tomlkit.exceptions import TOMLKitError

CRI_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}


class EditError(Exception):
    """The configuration cannot be edited; the message says which file and why."""


def child_table(parent, key):
    """The table `key` of `parent`, created (as a super table when it only holds tables)."""
    if key not in parent:
        parent.add(key, tomlkit.table(is_super_table=True))
    table = parent[key]
    if not hasattr(table, "keys") or isinstance(table, (str, list)):
        raise EditError(f"`{key}` is not a table")
    return table


def edit(text, path, handler, runtime_type, runtime_path, pod_annotations):
    """Returns the configuration `text` with the handler section set."""
    try:
        doc = tomlkit.parse(text) if text.strip() else None
    except TOMLKitError as err:
        raise EditError(f"{path}: not valid TOML: {err}") from err
    if doc is None:
        doc = tomlkit.document()
        doc.add("version", 2)
    version = doc.get("version", 1)
    if version not in CRI_PLUGIN:
        raise EditError(
            f"{path}: config version {version} is not supported (need version = 2 or 3; "
            "containerd 1.x files without `version` are version 1)"
        )
    table = doc
    for key in ("plugins", CRI_PLUGIN[version], "containerd", "runtimes"):
        try:
            table = child_table(table, key)
        except EditError as err:
            raise EditError(f"{path}: {err}") from err
    if handler not in table:
        table.add(handler, tomlkit.table())
    section = table[handler]
    section["runtime_type"] = runtime_type
    if runtime_path:
        section["runtime_path"] = runtime_path
    if pod_annotations:
        section["pod_annotations"] = list(pod_annotations)
    return tomlkit.dumps(doc)


def write_atomically(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.toml.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="containerd's config.toml")
    parser.add_argument("--handler", required=True, help="runtime handler name")
    parser.add_argument("--runtime-type", required=True)
    parser.add_argument("--runtime-path", default="", help="the shim binary (optional)")
    parser.add_argument("--pod-annotation", action="append", default=[])
    args = parser.parse_args()
    try:
        try:
            with open(args.config, encoding="utf-8") as src:
                old = src.read()
        except FileNotFoundError:
            old = ""
        except OSError as err:
            raise EditError(f"{args.config}: cannot read: {err}") from err
        new = edit(
            old,
            args.config,
            args.handler,
            args.runtime_type,
            args.runtime_path,
            args.pod_annotation,
        )
        if new == old:
            print("unchanged")
            return 0
        try:
            write_atomically(args.config, new)
        except OSError as err:
            raise EditError(f"{args.config}: cannot write: {err}") from err
    except EditError as err:
        print(f"containerd_handler: {err}", file=sys.stderr)
        return 2
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
