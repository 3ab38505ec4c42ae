#!/usr/bin/env bash
# oci/run-podman.sh: starts (or with --print shows) the picosnitch sidecar under podman: a
# privileged container in the host's PID, network, UTS and cgroup namespaces with the mounts of
# oci/mounts.txt.
#
#   oci/run-podman.sh [--print] [--caps] [--image IMAGE] [--name NAME] [--state-root DIR] [-- PODMAN-RUN-OPTIONS...]
#
#   --print           print the command instead of running it
#   --caps            the capabilities of oci/capabilities.txt instead of --privileged
#   --image IMAGE     default localhost/picosnitch:latest (oci/build.sh)
#   --name NAME       default picosnitch
#   --state-root DIR  put the state mounts under DIR (DIR/var/lib/picosnitch, ...) instead of
#                     the host's /var/lib/picosnitch and /var/log/picosnitch
#   -- ...            further `podman run` options (e.g. -e PICOSNITCH_DATABASE__WRITE_LIMIT_SECONDS=1)
#
# PODMAN_RUNTIME (default runc) and the ulimits below are what podman as root needs on the
# machines this was tested on (crun fails there); PODMAN_RUNTIME= leaves podman's default.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "oci/run-podman.sh: $*" >&2; exit 1; }

PRINT=0
PRIV=privileged
IMAGE=localhost/picosnitch:latest
NAME=picosnitch
STATE_ROOT=
EXTRA=()
while [ $# -gt 0 ]; do
	case $1 in
	--print) PRINT=1 ;;
	--caps) PRIV=caps ;;
	--image) [ $# -ge 2 ] || die "--image needs a value"; IMAGE=$2; shift ;;
	--name) [ $# -ge 2 ] || die "--name needs a value"; NAME=$2; shift ;;
	--state-root) [ $# -ge 2 ] || die "--state-root needs a value"; STATE_ROOT=$2; shift ;;
	--) shift; EXTRA=("$@"); break ;;
	-h | --help) sed -n '3,18p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
	shift
done

oci_mount_args "$STATE_ROOT"
oci_priv_args "$PRIV"
runtime=()
[ -n "${PODMAN_RUNTIME-runc}" ] && runtime=(--runtime "${PODMAN_RUNTIME-runc}")

cmd=(podman run -d --name "$NAME" "${runtime[@]}"
	--ulimit nofile=20000:20000 --ulimit nproc=32768:32768
	"${OCI_PRIV_ARGS[@]}"
	--pid=host --network=host --uts=host --cgroupns=host --stop-timeout 60
	--read-only --pull=never
	"${OCI_MOUNT_ARGS[@]}"
	"${EXTRA[@]}"
	"$IMAGE")

if [ "$PRINT" = 1 ]; then
	oci_print_cmd "${cmd[@]}"
	exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root: the sidecar loads eBPF programs (rootless podman cannot)"
mkdir -p "${OCI_STATE_DIRS[@]}"
"${cmd[@]}"
