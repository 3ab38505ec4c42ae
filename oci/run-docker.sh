#!/usr/bin/env bash
# oci/run-docker.sh: starts (or with --print shows) the picosnitch sidecar under docker: in the
# host's PID, network, UTS and cgroup namespaces, with the capabilities of oci/capabilities.txt (or
# --privileged) and the mounts of oci/mounts.txt.
#
#   oci/run-docker.sh [--print] [--privileged] [--image IMAGE] [--name NAME] [--state-root DIR] [-- DOCKER-RUN-OPTIONS...]
#
#   --print           print the command instead of running it
#   --privileged      --privileged instead of the capability list (some docker setups refuse
#                     it: "unable to apply caps"; the list works there)
#   --image IMAGE     default localhost/picosnitch:latest (ENGINE=docker oci/build.sh)
#   --name NAME       default picosnitch
#   --state-root DIR  put the state mounts under DIR instead of the host's /var/lib/picosnitch
#                     and /var/log/picosnitch
#   -- ...            further `docker run` options
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() { echo "oci/run-docker.sh: $*" >&2; exit 1; }

oci_run_args caps 16 "$@"

oci_mount_args "$STATE_ROOT"
oci_priv_args "$PRIV"

cmd=(docker run -d --name "$NAME" --restart unless-stopped
	"${OCI_PRIV_ARGS[@]}"
	--pid=host --network=host --uts=host --cgroupns=host --stop-timeout 60
	--read-only
	"${OCI_MOUNT_ARGS[@]}"
	"${EXTRA[@]}"
	"$IMAGE")

# docker creates missing bind-mount sources itself, as root-owned directories; so do we, first.
oci_print_or_run "${cmd[@]}"
