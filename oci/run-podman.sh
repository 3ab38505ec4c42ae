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

oci_run_args privileged 18 "$@"

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

[ "$PRINT" = 1 ] || [ "$(id -u)" = 0 ] ||
	die "run as root: the sidecar loads eBPF programs (rootless podman cannot)"
oci_print_or_run "${cmd[@]}"
