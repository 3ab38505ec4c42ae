#!/usr/bin/env python3
# extract_vmlinux.py: writes the uncompressed ELF vmlinux held inside a bzImage (the kernel's
# scripts/extract-vmlinux approach: find a compression magic, decompress from there, keep the
# first result that is an ELF file).
import bz2
import lzma
import os
import subprocess
import sys
import zlib

# (name, magic) in the order scripts/extract-vmlinux tries them.
MAGICS = [
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00\x00"),
    ("lz4", b"\x02\x21\x4c\x18"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
]

ELF = b"\x7fELF"


def decompress(kind, data):
    """Decompresses one stream at the start of data, ignoring whatever follows it."""
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    if kind == "xz":
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    if kind == "lzma":
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
    if kind == "bzip2":
        return bz2.BZ2Decompressor().decompress(data)
    tool = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}[kind]
    # Trailing data after the frame makes the tool fail after it has written the kernel.
    p = subprocess.run(tool, input=data, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return p.stdout


def extract(image):
    if image.startswith(ELF):
        return image
    tried = []
    for kind, magic in MAGICS:
        pos = image.find(magic)
        while pos >= 0:
            try:
                out = decompress(kind, image[pos:])
            except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, FileNotFoundError) as e:
                tried.append(f"{kind}@{pos}: {e}")
                out = b""
            if out.startswith(ELF):
                return out
            pos = image.find(magic, pos + 1)
    raise SystemExit("no compressed ELF kernel found in the image; tried: " + "; ".join(tried[:8]))


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: extract_vmlinux.py BZIMAGE OUTPUT")
    with open(sys.argv[1], "rb") as f:
        image = f.read()
    out = extract(image)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
