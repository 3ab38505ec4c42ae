#!/usr/bin/env bash
# oci/build.sh: builds the picosnitch image (oci/Containerfile) from the static release binary,
# building that binary first when it is missing or older than the sources.
#
#   oci/build.sh [--binary-only] [--tag TAG]      (ENGINE=docker oci/build.sh to use docker)
#
# The build context is a temporary directory holding only the binary and oci/config.toml, so
# neither podman nor docker copies the repository's target/ directory.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ENGINE=${ENGINE:-podman}
TAG=localhost/picosnitch:latest
BINARY_ONLY=0
TRIPLE=x86_64-unknown-linux-gnu
BIN=$ROOT/target/$TRIPLE/release/picosnitch

die() { echo "oci/build.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case $1 in
	--binary-only) BINARY_ONLY=1 ;;
	--tag) [ $# -ge 2 ] || die "--tag needs a value"; TAG=$2; shift ;;
	-h | --help) sed -n '3,8p' "$0"; exit 0 ;;
	*) die "unknown argument: $1" ;;
	esac
	shift
done

# The sources the binary is built from (daemon/tests and docs do not change it).
stale_sources() {
	find "$ROOT/daemon/src" "$ROOT/daemon/build.rs" "$ROOT/daemon/Cargo.toml" \
		"$ROOT/daemon-ebpf" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" \
		-type f -newer "$BIN" -print -quit
}

if [ ! -x "$BIN" ] || [ -n "$(stale_sources)" ]; then
	if [ -x "$BIN" ]; then
		echo "oci/build.sh: $(stale_sources) is newer than $BIN: rebuilding the static binary" >&2
	else
		echo "oci/build.sh: building the static binary $BIN" >&2
	fi
	(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
		cargo build --release --target "$TRIPLE" --bin picosnitch --quiet) ||
		die "cargo build of the static binary failed"
fi
[ -x "$BIN" ] || die "$BIN was not built"
if command -v file >/dev/null; then
	file_out=$(file -b "$BIN")
	case $file_out in
	*"statically linked"* | *"static-pie linked"*) ;;
	*) die "$BIN is not statically linked ($file_out): a FROM scratch image cannot run it" ;;
	esac
else
	echo "oci/build.sh: 'file' is not installed: not checking that $BIN is statically linked" >&2
fi
[ "$BINARY_ONLY" = 1 ] && { echo "$BIN"; exit 0; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BIN" "$ctx/picosnitch"
cp "$HERE/config.toml" "$ctx/config.toml"
pull=(--pull=never)
[ "$ENGINE" = docker ] && pull=()
"$ENGINE" build "${pull[@]}" -q -f "$HERE/Containerfile" -t "$TAG" "$ctx" >/dev/null ||
	die "$ENGINE build failed"
echo "$TAG"
