# oci/lib.sh: the sidecar's run options from oci/mounts.txt and oci/capabilities.txt, shared by
# oci/run-podman.sh, oci/run-docker.sh and oci/test.sh (sourced, not run).
# shellcheck shell=bash

OCI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OCI_MOUNTS=$OCI_DIR/mounts.txt
OCI_CAPS=$OCI_DIR/capabilities.txt

# The lines of mounts.txt without comments: "kind host container mode purpose...".
oci_mount_lines() {
	grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$OCI_MOUNTS"
}

# Fills the array OCI_MOUNT_ARGS with -v/--tmpfs options for podman and docker, and OCI_STATE_DIRS
# with the host directories of the `state` mounts (podman refuses a missing one: create them).
# $1, when not empty, is a directory the `state` mounts go under (DIR/var/lib/picosnitch, ...)
# instead of the host's own paths.
oci_mount_args() {
	local state_root=${1:-} kind host path mode _purpose src
	OCI_MOUNT_ARGS=()
	OCI_STATE_DIRS=()
	while read -r kind host path mode _purpose; do
		case $kind in
		host)
			OCI_MOUNT_ARGS+=(-v "$host:$path:$mode")
			;;
		state)
			src=$host
			[ -n "$state_root" ] && src=$state_root$host
			OCI_STATE_DIRS+=("$src")
			OCI_MOUNT_ARGS+=(-v "$src:$path:$mode")
			;;
		tmpfs)
			OCI_MOUNT_ARGS+=(--tmpfs "$path:$mode,mode=1777")
			;;
		*)
			echo "$OCI_MOUNTS: unknown kind '$kind'" >&2
			return 1
			;;
		esac
	done < <(oci_mount_lines)
}

# The capabilities of capabilities.txt, one word each (CAP_BPF ...).
oci_capabilities() {
	grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$OCI_CAPS" | awk '{print $1}'
}

# Fills OCI_PRIV_ARGS: --privileged, or ("caps") every capability dropped but those of
# capabilities.txt, and no AppArmor profile (docker-default refuses reading /proc/PID/exe of
# processes outside the container: ptrace read of an unconfined peer).
oci_priv_args() {
	local how=$1 cap
	OCI_PRIV_ARGS=()
	case $how in
	privileged) OCI_PRIV_ARGS=(--privileged) ;;
	caps)
		OCI_PRIV_ARGS=(--cap-drop=all)
		for cap in $(oci_capabilities); do
			OCI_PRIV_ARGS+=("--cap-add=$cap")
		done
		OCI_PRIV_ARGS+=(--security-opt apparmor=unconfined)
		;;
	*)
		echo "oci/lib.sh: privileges are 'privileged' or 'caps', not '$how'" >&2
		return 1
		;;
	esac
}

# Prints a command line, quoting only the words the shell would split or expand.
oci_print_cmd() {
	local out='' w
	for w in "$@"; do
		if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
			out+="$w "
		else
			out+="$(printf '%q' "$w") "
		fi
	done
	echo "${out% }"
}

# Parses the run scripts' shared arguments into PRINT, PRIV (default $1), IMAGE, NAME, STATE_ROOT
# and EXTRA; $2 is the number of the last line of the calling script's usage comment.
# shellcheck disable=SC2034 # the variables are the callers'
oci_run_args() {
	local help_end=$2
	PRIV=$1
	shift 2
	PRINT=0
	IMAGE=localhost/picosnitch:latest
	NAME=picosnitch
	STATE_ROOT=
	EXTRA=()
	while [ $# -gt 0 ]; do
		case $1 in
		--print) PRINT=1 ;;
		--privileged) PRIV=privileged ;;
		--caps) PRIV=caps ;;
		--image) [ $# -ge 2 ] || die "--image needs a value"; IMAGE=$2; shift ;;
		--name) [ $# -ge 2 ] || die "--name needs a value"; NAME=$2; shift ;;
		--state-root) [ $# -ge 2 ] || die "--state-root needs a value"; STATE_ROOT=$2; shift ;;
		--) shift; EXTRA=("$@"); break ;;
		-h | --help) sed -n "3,${help_end}p" "$0"; exit 0 ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
		shift
	done
}

# Prints the command (--print) or creates the state directories and runs it.
oci_print_or_run() {
	if [ "$PRINT" = 1 ]; then
		oci_print_cmd "$@"
		exit 0
	fi
	mkdir -p "${OCI_STATE_DIRS[@]}"
	"$@"
}
