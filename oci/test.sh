#!/usr/bin/env bash
# oci/test.sh: end-to-end test of the picosnitch image as a host-PID sidecar under podman:
# builds the image, runs it with oci/run-podman.sh (privileged, then with the capability list of
# oci/capabilities.txt), makes traffic with known byte counts from two client containers (two
# images whose /bin/tg differ) and from a host process, stops the sidecar and checks its SQLite
# database: each source's rows, sha256, container id, network namespace, exact bytes, and no
# loss but exe_unavailable of processes outside the test's traffic (see check_losses).
#
#   sudo oci/test.sh [privileged|caps]...     (default: both)
#
# Needs root, podman with runc, sqlite3, curl, gcc (static glibc), python3 with yaml. Reuses
# target/x86_64-unknown-linux-gnu/release/picosnitch when it is newer than the sources (else
# builds it: ~3 min) and target/vm-tests/work/trafficgen when newer than tests/trafficgen/*.c.
# Every failure names what was expected and what was found, and exits 1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$HERE/lib.sh"

T0=$(date +%s)
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
say() { echo "== $*"; }
pass() { echo "ok   $*"; }

MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(privileged caps)
for m in "${MODES[@]}"; do
	case $m in privileged | caps) ;; *) fail "unknown mode '$m' (privileged or caps)" ;; esac
done

# ---- preconditions: none is skipped, each missing one is a failure ----
[ "$(id -u)" = 0 ] || fail "run as root (the sidecar loads eBPF programs)"
for tool in podman runc sqlite3 curl gcc sha256sum python3 stat; do
	command -v "$tool" >/dev/null || fail "$tool is not installed"
done
python3 -c 'import yaml' 2>/dev/null || fail "python3 has no yaml module (Debian: python3-yaml)"

TMP=$(mktemp -d /tmp/picosnitch-oci-test.XXXXXX)
TAG=localhost/picosnitch-oci-test:$$
CLIENT_TAGS=()
CONTAINERS=()
SERVER_PID=
cleanup() {
	local rc=$?
	set +e
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
	for c in "${CONTAINERS[@]}"; do
		podman rm -f -t 0 "$c" >/dev/null 2>&1
	done
	for t in "${CLIENT_TAGS[@]}" "$TAG"; do
		podman rmi -f "$t" >/dev/null 2>&1
	done
	rm -rf "$TMP"
	if [ $rc -eq 0 ]; then
		echo "PASS (${MODES[*]}) in $(($(date +%s) - T0)) s"
	else
		echo "oci/test.sh failed (exit $rc) after $(($(date +%s) - T0)) s" >&2
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Options every `podman run` needs as root on the machines this runs on (crun does not work there).
PODMAN_RUN=(podman run --runtime runc --pull=never --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

# ---- 1. binaries and images ----
say "image"
"$HERE/build.sh" --tag "$TAG" >/dev/null || fail "oci/build.sh could not build the image"
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release/picosnitch
DAEMON_SHA=$(sha256sum "$BIN" | cut -d' ' -f1)
podman image exists "$TAG" || fail "podman has no image $TAG after the build"
ep=$(podman image inspect --format '{{json .Config.Entrypoint}}' "$TAG")
[ "$ep" = '["/usr/bin/picosnitch","start-no-daemon","--config","/etc/picosnitch/config.toml"]' ] ||
	fail "entrypoint of $TAG: $ep"
pass "built $TAG from the static binary (sha256 ${DAEMON_SHA:0:16}…)"

"$BIN" check-config --strict "$HERE/config.toml" >/dev/null 2>"$TMP/check-config.err" ||
	fail "picosnitch check-config --strict oci/config.toml: $(cat "$TMP/check-config.err")"
python3 "$HERE/check-manifests.py" --binary "$BIN" || fail "oci/check-manifests.py found problems"
pass "config.toml valid, manifests checked"

TG=$ROOT/target/vm-tests/work/trafficgen
if [ ! -x "$TG" ] || [ -n "$(find "$ROOT/tests/trafficgen" -name '*.c' -newer "$TG" -print -quit)" ]; then
	TG=$TMP/trafficgen
	gcc -O2 -static -Wall -Werror -o "$TG" "$ROOT"/tests/trafficgen/*.c || fail "building trafficgen failed"
fi
# Three copies, each with its own bytes appended: three sha256s, none the original's.
mkdir -p "$TMP/a/bin" "$TMP/b/bin" "$TMP/host"
for who in a b host; do
	dst=$TMP/$who/bin/tg
	[ "$who" = host ] && dst=$TMP/host/tg
	cp "$TG" "$dst"
	printf '\0picosnitch oci test %s' "$who" >>"$dst"
	chmod 0755 "$dst"
done
SHA_A=$(sha256sum "$TMP/a/bin/tg" | cut -d' ' -f1)
SHA_B=$(sha256sum "$TMP/b/bin/tg" | cut -d' ' -f1)
SHA_HOST=$(sha256sum "$TMP/host/tg" | cut -d' ' -f1)
if [ "$SHA_A" = "$SHA_B" ] || [ "$SHA_A" = "$SHA_HOST" ] || [ "$SHA_B" = "$SHA_HOST" ]; then
	fail "the three copies of trafficgen do not have three sha256s"
fi
HOST_TG=$TMP/host/tg
for who in a b; do
	printf 'FROM scratch\nCOPY bin/tg /bin/tg\n' >"$TMP/$who/Containerfile"
	tag=localhost/picosnitch-oci-test-$who:$$
	CLIENT_TAGS+=("$tag")
	podman build --pull=never -q -t "$tag" "$TMP/$who" >/dev/null || fail "podman build of client image $who failed"
done
TAG_A=${CLIENT_TAGS[0]}
TAG_B=${CLIENT_TAGS[1]}
pass "client images $TAG_A (/bin/tg ${SHA_A:0:12}…) and $TAG_B (/bin/tg ${SHA_B:0:12}…)"

HOST_NETNS=$(stat -L -c %i /proc/self/ns/net)

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A JSON field of a trafficgen line (numbers and strings only).
field() { # json key
	python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
}

# Runs a client container; sets CID (the id podman reports) and OUT (its last output line).
client() { # name image network args...
	local name=$1 image=$2 net=$3
	shift 3
	CONTAINERS+=("$name")
	"${PODMAN_RUN[@]}" --name "$name" --network="$net" --cidfile "$TMP/$name.cid" "$image" /bin/tg "$@" \
		>"$TMP/$name.out" 2>"$TMP/$name.err" ||
		fail "client container $name (/bin/tg $*) failed: $(cat "$TMP/$name.err")"
	CID=$(podman inspect --format '{{.Id}}' "$name")
	[ "$CID" = "$(cat "$TMP/$name.cid")" ] || fail "$name: podman inspect says $CID, the cidfile $(cat "$TMP/$name.cid")"
	[[ $CID =~ ^[0-9a-f]{64}$ ]] || fail "$name: container id '$CID' is not 64 hex digits"
	OUT=$(tail -n 1 "$TMP/$name.out")
}

q() { sqlite3 -batch -noheader "$DB" "$1" || fail "sqlite3 $DB failed on: $1"; }

# Every row of an executable path in a container ('' = the host), as sent|recv|sha256|netns|uid.
ROWS_SQL="SELECT c.send, c.recv, e.sha256, c.netns, c.uid, c.family, c.protocol, c.lport, c.rport
	FROM connections c JOIN executables e ON e.id = c.exe_id JOIN containers ct ON ct.id = c.container_id"

# Checks that the rows of (exe, container) sum to send/recv exactly and all carry sha256 and
# (unless '') netns; `netns!=N` asks for any namespace but N.
expect_rows() { # label exe container send recv sha256 netns
	local label=$1 exe=$2 ct=$3 send=$4 recv=$5 sha=$6 netns=$7 where got n
	where="e.exe = '$exe' AND ct.container = '$ct'"
	n=$(q "SELECT count(*) FROM ($ROWS_SQL WHERE $where)")
	[ "$n" -gt 0 ] || fail "$label: no rows for exe $exe in container '$ct'. Rows of $exe: $(q "SELECT group_concat(ct.container || ':' || c.send || '/' || c.recv, ' ') FROM ($ROWS_SQL WHERE e.exe = '$exe')" 2>/dev/null)
$(podman logs "$SIDECAR" 2>&1 | tail -n 20)"
	got=$(q "SELECT sum(send) || ' ' || sum(recv) FROM ($ROWS_SQL WHERE $where)")
	[ "$got" = "$send $recv" ] || fail "$label: rows sum to sent/received $got, expected $send $recv:
$(q "$ROWS_SQL WHERE $where")"
	got=$(q "SELECT group_concat(DISTINCT sha256) FROM ($ROWS_SQL WHERE $where)")
	[ "$got" = "$sha" ] || fail "$label: sha256 of the rows is '$got', expected $sha (sha256sum)"
	got=$(q "SELECT group_concat(DISTINCT uid || '/' || family || '/' || protocol) FROM ($ROWS_SQL WHERE $where)")
	[ "$got" = "0/2/6" ] || fail "$label: uid/family/protocol '$got', expected 0/2/6 (root, IPv4, TCP)"
	case $netns in
	'') ;;
	'!='*)
		got=$(q "SELECT count(*) FROM ($ROWS_SQL WHERE $where AND c.netns = ${netns#!=})")
		[ "$got" = 0 ] || fail "$label: $got rows in network namespace ${netns#!=}, expected another one"
		;;
	*)
		got=$(q "SELECT group_concat(DISTINCT netns) FROM ($ROWS_SQL WHERE $where)")
		[ "$got" = "$netns" ] || fail "$label: network namespace '$got', expected $netns"
		;;
	esac
	pass "$label: $n rows, sent $send, received $recv, sha256 ${sha:0:16}… ${ct:-(host)}"
}

# A directory laid out as the kubelet lays out a ConfigMap volume, holding configmap.yaml's data.
configmap_dir() { # dir
	local dir=$1 ts=..2026_01_01_00_00_00.000000000
	mkdir -p "$dir/$ts"
	python3 - "$HERE/kubernetes/configmap.yaml" "$dir/$ts" <<-'EOF'
		import pathlib, sys, yaml
		for doc in yaml.safe_load_all(open(sys.argv[1])):
		    for key, text in doc["data"].items():
		        pathlib.Path(sys.argv[2], key).write_text(text)
	EOF
	ln -sfn "$ts" "$dir/..data"
	ln -sfn ..data/config.toml "$dir/config.toml"
	cmp -s "$dir/config.toml" "$HERE/config.toml" || fail "the ConfigMap's config.toml is not oci/config.toml"
}

run_mode() { # privileged|caps
	local mode=$1 state=$TMP/state-$1 port flag=() extra=() t ready=0 started json
	say "sidecar ($mode)"
	if [ "$mode" = caps ]; then
		# As the DaemonSet runs it: the capability list, and /etc/picosnitch laid out as a
		# ConfigMap volume (config.toml -> ..data/config.toml) from kubernetes/configmap.yaml.
		configmap_dir "$TMP/configmap"
		flag=(--caps)
		extra=(-v "$TMP/configmap:/etc/picosnitch:ro")
	fi
	SIDECAR=picosnitch-oci-test-$mode-$$
	port=$(free_port)
	API=http://127.0.0.1:$port
	mkdir -p "$state"
	CONTAINERS+=("$SIDECAR")
	# The image's own config.toml; the test only shortens the write window and picks a free port.
	"$HERE/run-podman.sh" "${flag[@]}" --image "$TAG" --name "$SIDECAR" --state-root "$state" -- \
		-e PICOSNITCH_DATABASE__WRITE_LIMIT_SECONDS=1 -e "PICOSNITCH_API__LISTEN=127.0.0.1:$port" \
		-e PICOSNITCH_LOG=info,picosnitch::identity=debug "${extra[@]}" >/dev/null ||
		fail "oci/run-podman.sh ${flag[*]} could not start the sidecar"
	started=$(date +%s.%N)
	for ((t = 0; t < 600; t++)); do
		if [ "$(podman inspect --format '{{.State.Running}}' "$SIDECAR")" != true ]; then
			fail "the sidecar exited (status $(podman inspect --format '{{.State.ExitCode}}' "$SIDECAR")) before it was ready:
$(podman logs "$SIDECAR" 2>&1 | tail -n 30)"
		fi
		if json=$(curl -sf --max-time 2 "$API/api/v1/status" 2>/dev/null) &&
			[ -n "$(field "$json" hook_set)" ]; then
			ready=1
			break
		fi
		sleep 0.1
	done
	[ $ready = 1 ] || fail "the sidecar's API $API/api/v1/status did not answer within 60 s:
$(podman logs "$SIDECAR" 2>&1 | tail -n 30)"
	SIDECAR_ID=$(podman inspect --format '{{.Id}}' "$SIDECAR")
	pass "sidecar ready in $(python3 -c "import time; print(f'{time.time() - $started:.1f}')") s, hook set $(field "$json" hook_set), kernel $(field "$json" kernel)"
	curl -sf --max-time 5 "$API/metrics" >"$TMP/metrics" || fail "GET $API/metrics failed"
	grep -q '^picosnitch_hook_set_info' "$TMP/metrics" || fail "/metrics has no picosnitch_hook_set_info"
	[ -f "$state/var/lib/picosnitch/picosnitch.db" ] || fail "no database in the state directory $state/var/lib/picosnitch"

	say "traffic ($mode)"
	# A: client and server in the container's own network namespace (loopback), echo.
	client "tg-a-$mode-$$" "$TAG_A" none drip --bytes 617 --count 2 --interval-ms 150
	local cid_a=$CID out_a=$OUT
	[ "$(field "$out_a" sent)/$(field "$out_a" received)" = 1234/1234 ] || fail "container A's trafficgen: $out_a"
	# B: in the host's network namespace, client of an echo server that runs on the host.
	"$HOST_TG" serve-tcp --mode echo --count 1 >"$TMP/server-$mode.out" 2>"$TMP/server-$mode.err" &
	SERVER_PID=$!
	for ((t = 0; t < 100; t++)); do
		[ -s "$TMP/server-$mode.out" ] && break
		sleep 0.1
	done
	local sport
	sport=$(field "$(head -n 1 "$TMP/server-$mode.out")" port)
	[ -n "$sport" ] || fail "the host's echo server did not start: $(cat "$TMP/server-$mode.err")"
	client "tg-b-$mode-$$" "$TAG_B" host drip --no-server --addr 127.0.0.1 --port "$sport" --bytes 2160 --count 2 --interval-ms 150
	local cid_b=$CID out_b=$OUT
	[ "$(field "$out_b" sent)/$(field "$out_b" received)" = 4320/4320 ] || fail "container B's trafficgen: $out_b"
	wait "$SERVER_PID" || fail "the host's echo server failed: $(cat "$TMP/server-$mode.err")"
	SERVER_PID=
	local out_s
	out_s=$(tail -n 1 "$TMP/server-$mode.out")
	[ "$(field "$out_s" sent)/$(field "$out_s" received)" = 4320/4320 ] || fail "the host's echo server: $out_s"
	# The host alone: client and server both on the host.
	local out_h
	out_h=$("$HOST_TG" drip --bytes 1000 --count 2 --interval-ms 150) || fail "host trafficgen drip failed"
	[ "$(field "$out_h" sent)/$(field "$out_h" received)" = 2000/2000 ] || fail "the host's trafficgen: $out_h"
	pass "container A 1234/1234 (client and server), container B 4320/4320 to the host's server, host 2000/2000"
	# One more API request after the traffic: the sidecar's own executable is on the network too.
	curl -sf --max-time 5 "$API/api/v1/status" >/dev/null || fail "GET $API/api/v1/status failed after the traffic"

	say "stop ($mode)"
	podman stop -t 60 "$SIDECAR" >/dev/null || fail "podman stop $SIDECAR failed"
	local code
	code=$(podman inspect --format '{{.State.ExitCode}}' "$SIDECAR")
	podman logs "$SIDECAR" >"$TMP/sidecar-$mode.log" 2>&1
	[ "$code" = 0 ] || fail "the sidecar exited with status $code after podman stop:
$(tail -n 30 "$TMP/sidecar-$mode.log")"
	grep -q 'everything was written' "$TMP/sidecar-$mode.log" ||
		fail "the sidecar's log does not say that everything was written:
$(tail -n 20 "$TMP/sidecar-$mode.log")"
	pass "podman stop: exit status 0, everything written"

	say "database ($mode)"
	DB=$state/var/lib/picosnitch/picosnitch.db
	[ -f "$DB" ] || fail "no database at $DB"
	[ "$(q 'PRAGMA quick_check')" = ok ] || fail "PRAGMA quick_check of $DB: $(q 'PRAGMA quick_check')"
	# Container A: 2 × 617 bytes each way, client and server both in it (each sent and received).
	expect_rows "container A" /bin/tg "podman:$cid_a" 2468 2468 "$SHA_A" "!=$HOST_NETNS"
	# Container B: only its client; its server is the host's.
	expect_rows "container B" /bin/tg "podman:$cid_b" 4320 4320 "$SHA_B" "$HOST_NETNS"
	# The host's copy: the echo server (4320 each way) and both ends of its own drip (2 × 2000).
	expect_rows "host process" "$HOST_TG" "" 8320 8320 "$SHA_HOST" "$HOST_NETNS"
	local got
	got=$(q "SELECT sum(send) || ' ' || sum(recv) FROM ($ROWS_SQL WHERE e.exe = '$HOST_TG' AND c.lport = $sport)")
	[ "$got" = "4320 4320" ] || fail "host process: the echo server's rows (local port $sport) sum to $got, expected 4320 4320"
	pass "host process: the echo server's rows (local port $sport) are 4320/4320"
	# /bin/tg has no rows in any other container, and no row anywhere has another hash of it.
	got=$(q "SELECT count(*) FROM ($ROWS_SQL WHERE e.exe = '/bin/tg' AND ct.container NOT IN ('podman:$cid_a', 'podman:$cid_b'))")
	[ "$got" = 0 ] || fail "$got rows of /bin/tg outside the two client containers"
	# The sidecar's own API answers: /usr/bin/picosnitch in the sidecar's container, its hash.
	got=$(q "SELECT group_concat(DISTINCT e.sha256) FROM connections c JOIN executables e ON e.id = c.exe_id
		JOIN containers ct ON ct.id = c.container_id
		WHERE e.exe = '/usr/bin/picosnitch' AND ct.container = 'podman:$SIDECAR_ID'")
	[ "$got" = "$DAEMON_SHA" ] || fail "the sidecar's own rows (/usr/bin/picosnitch in podman:$SIDECAR_ID) have sha256 '$got', expected $DAEMON_SHA"
	pass "the sidecar's own API traffic: /usr/bin/picosnitch in podman:${SIDECAR_ID:0:12}…, sha256 matches the binary"
	check_losses "$mode"
}

# No loss may be recorded, with one exception the sidecar cannot avoid: `exe_unavailable` for
# processes outside this test's traffic whose executable it could not open. A process that exits
# before the daemon opens /proc/PID/exe (cat, head, podman's helpers) is opened by its exec path
# instead, and that path names nothing in the sidecar's own (scratch) mount namespace; /proc/1 is
# unreadable on some hosts. The daemon logs each at debug level ("executable unavailable ...
# name=COMM"): every one must be accounted for, and none may be a process of the traffic above
# (tg) or the daemon.
check_losses() { # mode
	local log=$TMP/sidecar-$1.log others unavailable lines ours
	others=$(q "SELECT coalesce(group_concat(source || '=' || n, ' '), '') FROM (SELECT source, sum(count) AS n
		FROM losses WHERE source != 'exe_unavailable' GROUP BY source ORDER BY source)")
	[ -z "$others" ] || fail "losses recorded: $others"
	unavailable=$(q "SELECT coalesce(sum(count), 0) FROM losses WHERE source = 'exe_unavailable'")
	lines=$(grep -c 'executable unavailable' "$log" || true)
	[ "$unavailable" = "$lines" ] || fail "exe_unavailable: $unavailable in the losses table, but the log names $lines processes:
$(grep 'executable unavailable' "$log")"
	ours=$(grep 'executable unavailable' "$log" | grep -E 'name="(tg|picosnitch)"' || true)
	[ -z "$ours" ] || fail "the traffic's own processes were not identified:
$ours"
	if [ "$unavailable" = 0 ]; then
		pass "losses table: empty"
	else
		pass "losses table: only exe_unavailable=$unavailable, for other processes: $(grep -o 'executable unavailable.*' "$log" |
			sed -E 's/.*tgid=([0-9]+).*name="([^"]*)".*/\2(\1)/' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')"
	fi
}

for mode in "${MODES[@]}"; do
	run_mode "$mode"
done
