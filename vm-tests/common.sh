# common.sh: helpers of the VM scripts (run.sh, systemd.sh): messages, fatal errors, the static-binary check (sourced, not run).
# shellcheck shell=bash

say() { printf '%s\n' "$*" >&2; }
die() {
	say "$(basename "$0"): $*"
	exit 2
}

is_static() { # file
	local out
	out=$(ldd "$1" 2>&1 || true)
	grep -qE 'not a dynamic|statically' <<<"$out"
}
