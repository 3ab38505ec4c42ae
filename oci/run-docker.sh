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

PRINT=0
PRIV=caps
IMAGE=localhost/picosnitch:latest
NAME=picosnitch
STATE_ROOT=
EXTRA=()
while [ $# -gt 0 ]; do
	case $1 in
	--print) PRINT=1 ;;
	--privileged) PRIV=privileged ;;
	--image) [ $# -ge 2 ] || die "--image needs a value"; IMAGE=$2; shift ;;
	--name) [ $# -ge 2 ] || die "--name needs a value"; NAME=$2; shift ;;
	--state-root) [ $# -ge 2 ] || die "--state-root needs a value"; STATE_ROOT=$2; shift ;;
	--) shift; EXTRA=("$@"); break ;;
	-h | --help) sed -n '3,16p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
	shift
done

oci_mount_args "$STATE_ROOT"
oci_priv_args "$PRIV"

cmd=(docker run -d --name "$NAME" --restart unless-stopped
	"${OCI_PRIV_ARGS[@]}"
	--pid=host --network=host --uts=host --cgroupns=host --stop-timeout 60
	--read-only
	"${OCI_MOUNT_ARGS[@]}"
	"${EXTRA[@]}"
	"$IMAGE")

if [ "$PRINT" = 1 ]; then
	oci_print_cmd "${cmd[@]}"
	exit 0
fi
# docker creates missing bind-mount sources itself, as root-owned directories; so do we, first.
mkdir -p "${OCI_STATE_DIRS[@]}"
"${cmd[@]}"
