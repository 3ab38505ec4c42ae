#!/usr/bin/env python3
# modules.py: copies kernel modules and everything they need (their .modinfo "depends=" and
# "softdep=pre:") out of an extracted linux-image package, uncompressed, with the order to load
# them in; the kernel-matrix VM loads them with insmod (busybox has no modprobe database).
#
# Usage: modules.py EXTRACTED_DEB OUT_DIR MODULE...
# Writes OUT_DIR/RELEASE/NAME.ko and OUT_DIR/RELEASE/order (one file name per line, dependencies
# first). A module built into this kernel (listed in modules.builtin) needs no file; a module
# that is neither a file nor built in is an error naming it.
import glob
import lzma
import os
import subprocess
import sys


def norm(name):
    return name.replace("-", "_")


def read_module(path):
    """The uncompressed ELF bytes of a .ko, .ko.xz or .ko.zst file."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
    return data


def modinfo(elf, key):
    """Values of `key` in the module's .modinfo strings (NUL-separated key=value)."""
    out = []
    for s in elf.split(b"\0"):
        if s.startswith(key.encode() + b"="):
            out.append(s[len(key) + 1 :].decode(errors="replace"))
    return out


def deps_of(elf):
    """(name, soft) of every module this one needs loaded before it."""
    names = []
    for d in modinfo(elf, "depends"):
        names += [(n, False) for n in d.split(",") if n]
    for d in modinfo(elf, "softdep"):
        words = d.split()
        if words and words[0] == "pre:":
            names += [(n, True) for n in words[1:]]
    return names


def main():
    if len(sys.argv) < 4:
        print(__doc__ or "usage: modules.py EXTRACTED_DEB OUT_DIR MODULE...", file=sys.stderr)
        return 2
    root, out, wanted = sys.argv[1], sys.argv[2], sys.argv[3:]
    bases = glob.glob(os.path.join(root, "lib/modules/*")) + glob.glob(
        os.path.join(root, "usr/lib/modules/*")
    )
    bases = [b for b in bases if os.path.isdir(os.path.join(b, "kernel"))]
    if len(bases) != 1:
        print(f"modules.py: expected one lib/modules/RELEASE in {root}, found {bases}", file=sys.stderr)
        return 1
    base = bases[0]
    release = os.path.basename(base)
    files = {}
    for dirpath, _, names in os.walk(os.path.join(base, "kernel")):
        for n in names:
            stem = n.split(".ko")[0]
            if ".ko" in n:
                files[norm(stem)] = os.path.join(dirpath, n)
    builtin = set()
    try:
        with open(os.path.join(base, "modules.builtin")) as f:
            builtin = {norm(os.path.basename(l.strip()).split(".ko")[0]) for l in f}
    except OSError:
        pass
    dest = os.path.join(out, release)
    os.makedirs(dest, exist_ok=True)
    order, seen = [], set()

    def visit(name, soft):
        name = norm(name)
        if name in seen:
            return
        seen.add(name)
        path = files.get(name) or files.get(name + "_generic")
        if path is None:
            if name in builtin or name + "_generic" in builtin or soft:
                # Built in, or a soft dependency this kernel provides another way.
                return
            raise SystemExit(f"modules.py: no module {name} in {release} and it is not built in")
        elf = read_module(path)
        for d, d_soft in deps_of(elf):
            visit(d, d_soft)
        fname = os.path.basename(path).split(".ko")[0] + ".ko"
        with open(os.path.join(dest, fname), "wb") as f:
            f.write(elf)
        order.append(fname)

    for w in wanted:
        visit(w, False)
    with open(os.path.join(dest, "order"), "w") as f:
        f.write("".join(n + "\n" for n in order))
    print(f"{release}: {' '.join(order)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
