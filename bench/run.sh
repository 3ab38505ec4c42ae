#!/usr/bin/env bash
# bench/run.sh: picosnitch overhead benchmarks: each workload without and with the daemon, alternated, as ratios.
#
# Usage: sudo bench/run.sh            (build the daemon first: cargo build --release)
# Environment: ROUNDS (5), BULK_SECONDS (10), UDP_SECONDS (10), STORM_CONNS (20000),
#              EXEC_RATE (2000), EXEC_SECONDS (10), PICOSNITCH_BIN (target/release/picosnitch), KEEP_WORK=1,
#              QUIET_WAIT (120: seconds to wait before each run for other picosnitch instances to stop).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${PICOSNITCH_BIN:-$(dirname "$HERE")/target/release/picosnitch}
ROUNDS=${ROUNDS:-5}
BULK_SECONDS=${BULK_SECONDS:-10}
UDP_SECONDS=${UDP_SECONDS:-10}
STORM_CONNS=${STORM_CONNS:-20000}
EXEC_RATE=${EXEC_RATE:-2000}
EXEC_SECONDS=${EXEC_SECONDS:-10}
QUIET_WAIT=${QUIET_WAIT:-120}
WORKLOADS=(tcp_bulk udp_rate tcp_storm exec_storm)
HZ=$(getconf CLK_TCK)

[[ $EUID -eq 0 ]] || { echo "run.sh: run as root (sudo bench/run.sh)" >&2; exit 1; }
[[ -x $BIN ]] || { echo "run.sh: no daemon at $BIN (cargo build --release)" >&2; exit 1; }
for tool in gcc sqlite3; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/picosnitch-bench.XXXXXX)
RES=$WORK/results
mkdir -p "$WORK/bin" "$RES"
DPID=""
SAMPLER=""
cleanup() {
	[[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null || true
	if [[ -n $DPID ]]; then kill -TERM "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
	if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# --- helpers -------------------------------------------------------------------------------------
for prog in tcp_bulk udp_rate tcp_storm exec_storm; do
	gcc -O2 -Wall -o "$WORK/bin/$prog" "$HERE/$prog.c"
done
gcc -O2 -Wall -static -o "$WORK/bin/udp_child" "$HERE/udp_child.c"
BINDIR=$(readlink -f "$WORK/bin")
cp "$BIN" "$WORK/picosnitch" # a rebuild during the run does not change what is measured

provenance() { # which binary is measured, and how it relates to the source tree
	local root; root=$(dirname "$HERE")
	log "daemon: $BIN, built $(date -r "$BIN" '+%F %T %Z'), sha256 $(sha256sum <"$BIN" | cut -c1-16)"
	git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || return 0
	local changed newer
	changed=$(git --no-optional-locks -C "$root" status --porcelain -- daemon daemon-ebpf Cargo.toml Cargo.lock | wc -l)
	newer=$(find "$root/daemon" "$root/daemon-ebpf" -type f -newer "$BIN" | wc -l)
	log "source: HEAD $(git -C "$root" rev-parse --short HEAD), $changed uncommitted changes under daemon/ daemon-ebpf/ Cargo.*, $newer source files newer than the binary"
}

workload_cmd() {
	case $1 in
	tcp_bulk) echo "$BINDIR/tcp_bulk $BULK_SECONDS" ;;
	udp_rate) echo "$BINDIR/udp_rate $UDP_SECONDS" ;;
	tcp_storm) echo "$BINDIR/tcp_storm $STORM_CONNS" ;;
	exec_storm) echo "$BINDIR/exec_storm $BINDIR/udp_child $EXEC_RATE $EXEC_SECONDS" ;;
	esac
}
# The value after this key in a helper's output line is the workload's metric.
metric_key() {
	case $1 in
	tcp_bulk) echo gbps ;; udp_rate) echo dgrams_per_s ;; tcp_storm) echo conns_per_s ;; exec_storm) echo execs_per_s ;;
	esac
}
ops_key() { # the amount of work done, as printed by the helper
	case $1 in tcp_bulk) echo bytes ;; udp_rate) echo sent ;; tcp_storm) echo conns ;; exec_storm) echo launched ;; esac
}
ops_scale() { # CPU per op is reported as: s/GiB, us/datagram, us/connection, us/exec
	case $1 in tcp_bulk) echo 1073741824 ;; *) echo 1000000 ;; esac
}
field() { # field KEY LINE: the word after KEY in LINE
	awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$2"
}

# --- measurements --------------------------------------------------------------------------------
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }        # utime + stime, all threads
child_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }  # waited-for children of this shell
machine_busy() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }   # user + nice + system
now() { date +%s.%N; }

pss_sampler() { # writes the peak Pss (kB) of PID to FILE until killed
	local pid=$1 out=$2 peak=0 k v _
	while kill -0 "$pid" 2>/dev/null; do
		while read -r k v _; do
			[[ $k == Pss: ]] && ((v > peak)) && peak=$v && echo "$peak" >"$out"
		done <"/proc/$pid/smaps_rollup" 2>/dev/null || true
		sleep 0.5
	done
}

daemon_start() { # daemon_start DIR: starts the daemon with its state under DIR; STARTED=1 once hooked
	local dir=$1
	mkdir -p "$dir"
	printf '[database]\nwrite_limit_seconds = 10\n' >"$dir/config.toml"
	PICOSNITCH_ROOT=$dir "$BIN" start-no-daemon --config "$dir/config.toml" 2>"$dir/stderr.log" &
	DPID=$!
	STARTED=0
	for _ in $(seq 600); do
		grep -q "picosnitch is monitoring" "$dir/stderr.log" && { STARTED=1; sleep 1; return 0; }
		kill -0 "$DPID" 2>/dev/null || break
		sleep 0.1
	done
	echo "run.sh: the daemon did not start; its stderr:" >&2
	cat "$dir/stderr.log" >&2
	reap_daemon
}

reap_daemon() { # the daemon is gone (or must go): collect it without judging its exit status
	kill -TERM "$DPID" 2>/dev/null || true
	wait "$DPID" 2>/dev/null || true
	DPID=""
}

daemon_stop() {
	local rc=0
	kill -TERM "$DPID"
	wait "$DPID" || rc=$?
	DPID=""
	((rc == 0)) || { echo "run.sh: the daemon exited with status $rc" >&2; exit 1; }
}

foreign_hooks() { # picosnitch daemons or hooks that are not ours (other tests on this machine)
	local n p
	n=$({ pgrep -x picosnitch || true; } | { grep -vx "${DPID:-none}" || true; } | wc -l)
	if command -v bpftool >/dev/null; then
		p=$(bpftool prog show 2>/dev/null | grep -cE 'name (tp_sock_send_length|fexit_inet_sendmsg|kp_inet_sendmsg) ' || true)
		[[ -z $DPID ]] || p=$((p - 1))
		((p <= n)) || n=$p
	fi
	echo "$n"
}

wait_quiet() { # waits up to QUIET_WAIT seconds for other picosnitch instances to go away
	local waited=0
	while (($(foreign_hooks) > 0 && waited < QUIET_WAIT)); do
		((waited > 0)) || log "waiting for another picosnitch (not ours) to stop"
		sleep 2; waited=$((waited + 2))
	done
}

sql() { sqlite3 -batch -noheader "$1/var/lib/picosnitch/picosnitch.db" "$2"; }
exe_sum() { # exe_sum DIR EXE COLUMN: total of COLUMN over the rows of executable EXE
	sql "$1" "SELECT COALESCE(SUM(c.$3), 0) FROM connections c JOIN executables e ON e.id = c.exe_id
	          WHERE e.exe = '$2';"
}

# measure WORKLOAD MODE ROUND ATTEMPT: runs one workload (MODE base or mon), appends to the result
# files; sets REDO=1 when the daemon was stopped from outside and the run must be repeated.
measure() {
	local w=$1 mode=$2 round=$3 dir=$WORK/state-$1-$3-$4 out t0 t1 c0 c1 b0 b1 d0=0 d1=0 wall f0 f1
	REDO=0
	wait_quiet
	if [[ $mode == mon ]]; then
		daemon_start "$dir"
		((STARTED)) || { REDO=1; return 0; }
		echo 0 >"$dir/pss"
		pss_sampler "$DPID" "$dir/pss" &
		SAMPLER=$!
		d0=$(proc_ticks "$DPID")
	fi
	f0=$(foreign_hooks)
	b0=$(machine_busy); c0=$(child_ticks); t0=$(now)
	out=$($(workload_cmd "$w"))
	t1=$(now); c1=$(child_ticks); b1=$(machine_busy)
	f1=$(foreign_hooks)
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
	if [[ $mode == mon ]]; then
		kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
		if ! kill -0 "$DPID" 2>/dev/null; then
			log "round $round $w mon: the daemon was stopped from outside during the workload; repeating"
			reap_daemon; REDO=1; return 0
		fi
		d1=$(proc_ticks "$DPID")
		awk -v t=$((d1 - d0)) -v hz="$HZ" -v w="$wall" 'BEGIN { printf "%.1f\n", 100 * t / hz / w }' >>"$RES/$w.cpu"
		cat "$dir/pss" >>"$RES/$w.pss"
	fi
	local value ops other
	value=$(field "$(metric_key "$w")" "$out"); ops=$(field "$(ops_key "$w")" "$out")
	echo "$value" >>"$RES/$w.$mode"
	echo "$round $mode $value" >>"$RES/$w.pairs"
	# CPU of the workload's processes (user + system, children included) per unit of work.
	awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$ops" -v s="$(ops_scale "$w")" \
		'BEGIN { printf "%.4f\n", t / hz / n * s }' >>"$RES/$w.cpuop.$mode"
	awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$ops" -v r="$round" -v m="$mode" \
		'BEGIN { printf "%s %s %.9g\n", r, m, t / hz / n }' >>"$RES/$w.cpuop.pairs"
	# CPU of everything else on the machine (other users' builds and tests), % of the whole machine.
	other=$(awk -v b=$((b1 - b0 - (c1 - c0) - (d1 - d0))) -v hz="$HZ" -v w="$wall" -v n="$(nproc)" \
		'BEGIN { v = 100 * b / hz / w / n; printf "%.0f\n", v < 0 ? 0 : v }')
	echo "$other" >>"$RES/other"
	log "round $round $w $mode: $out | other load ${other}% of machine"
	if ((f0 + f1 > 0)); then
		log "  another picosnitch (not ours) was running during this run (before: $f0, after: $f1)"
		echo "round $round $w $mode" >>"$RES/foreign"
	fi
	[[ $mode == mon ]] || return 0

	daemon_stop
	local warns; warns=$(grep -c WARN "$dir/stderr.log" || true)
	((warns == 0)) || log "  daemon WARN lines: $warns"
	# Rows whose process name is a bench helper but whose executable is not the helper's path.
	local stray; stray=$(sql "$dir" "SELECT COUNT(*) || ' rows, ' || COALESCE(SUM(c.send + c.recv), 0) || ' bytes'
		FROM connections c JOIN executables e ON e.id = c.exe_id
		WHERE e.name IN ('tcp_bulk', 'udp_rate', 'tcp_storm', 'exec_storm', 'udp_child')
		  AND e.exe NOT LIKE '$BINDIR/%';")
	[[ $stray == "0 rows, 0 bytes" ]] || log "  bench processes without their executable: $stray"
	echo "$stray" >>"$RES/$w.stray"
	local losses; losses=$(sql "$dir" "SELECT source || '=' || SUM(count) FROM losses GROUP BY source;" | paste -sd' ')
	[[ -z $losses ]] || { log "  losses table: $losses"; echo "round $round: $losses" >>"$RES/$w.losses"; }
	case $w in
	tcp_storm)
		local sent recv; sent=$(exe_sum "$dir" "$BINDIR/tcp_storm" send); recv=$(exe_sum "$dir" "$BINDIR/tcp_storm" recv)
		echo "$round $((STORM_CONNS * 100 - sent)) $((STORM_CONNS * 100 - recv))" >>"$RES/$w.check"
		log "  DB: tcp_storm sent $sent recv $recv (expected $((STORM_CONNS * 100)) each)" ;;
	exec_storm)
		local ok sent; ok=$(field ok "$out"); sent=$(exe_sum "$dir" "$BINDIR/udp_child" send)
		echo "$round $((ok * 100 - sent))" >>"$RES/$w.check"
		log "  DB: udp_child sent $sent (expected $ok children x 100 = $((ok * 100)))" ;;
	esac
}

# --- run -------------------------------------------------------------------------------------------
log "picosnitch $("$BIN" version | awk '{ print $2 }'); $(nproc) CPUs; kernel $(uname -r); $ROUNDS rounds"
log "load average before start: $(cut -d' ' -f1-3 /proc/loadavg)"
provenance
BIN=$WORK/picosnitch
for round in $(seq "$ROUNDS"); do
	for w in "${WORKLOADS[@]}"; do
		if ((round % 2)); then order=(base mon); else order=(mon base); fi
		for mode in "${order[@]}"; do
			for attempt in 1 2 3; do
				measure "$w" "$mode" "$round" "$attempt"
				((REDO)) || break
			done
			((REDO == 0)) || { echo "run.sh: no complete monitored run in 3 attempts; giving up" >&2; exit 1; }
		done
	done
done

# --- report ----------------------------------------------------------------------------------------
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ratios() { # per-round monitored/baseline of the same round
	awk '{ v[$1, $2] = $3; r[$1] = 1 } END { for (k in r) if (v[k, "base"] > 0) printf "%.4f\n", v[k, "mon"] / v[k, "base"] }' "$1"
}
target() { case $1 in tcp_bulk) echo 0.99 ;; udp_rate) echo 0.97 ;; *) echo "" ;; esac; }
unit() { case $1 in tcp_bulk) echo Gbit/s ;; udp_rate) echo datagrams/s ;; tcp_storm) echo conn/s ;; exec_storm) echo exec/s ;; esac; }
opunit() { case $1 in tcp_bulk) echo s/GiB ;; udp_rate) echo us/datagram ;; tcp_storm) echo us/conn ;; exec_storm) echo us/exec ;; esac; }

echo
echo "picosnitch overhead: $(nproc) CPUs, kernel $(uname -r), $ROUNDS rounds, baseline and monitored alternated"
echo "ratio = median over rounds of monitored/baseline measured back to back (1.000 = no cost)"
echo "CPU/op = the workload's own CPU time per unit of work, monitored/baseline (1.000 = no cost)"
echo "daemon CPU = % of one core over the workload; daemon PSS = peak during the workload; medians"
printf '%-10s %-11s %9s %9s %6s %6s %-4s %7s %7s %9s\n' workload unit baseline monitored ratio target met \
	CPU/op daemon "daemon"
printf '%-10s %-11s %9s %9s %6s %6s %-4s %7s %7s %9s\n' "" "" "" "" "" "" "" ratio CPU PSS
for w in "${WORKLOADS[@]}"; do
	b=$(median <"$RES/$w.base"); m=$(median <"$RES/$w.mon"); r=$(ratios "$RES/$w.pairs" | median)
	t=$(target "$w"); met=-
	[[ -n $t ]] && met=$(awk -v r="$r" -v t="$t" 'BEGIN { print (r >= t) ? "yes" : "NO" }')
	cr=$(ratios "$RES/$w.cpuop.pairs" | median)
	cpu=$(median <"$RES/$w.cpu"); pss=$(median <"$RES/$w.pss")
	printf '%-10s %-11s %9s %9s %6.3f %6s %-4s %7.3f %6s%% %5.1f MiB\n' "$w" "$(unit "$w")" "$b" "$m" "$r" \
		"${t:-}" "$met" "$cr" "$cpu" "$(awk -v k="$pss" 'BEGIN { print k / 1024 }')"
done
echo
echo "per-round ratios (throughput | workload CPU per op):"
for w in "${WORKLOADS[@]}"; do
	echo "  $w: $(ratios "$RES/$w.pairs" | sort -g | paste -sd' ') | $(ratios "$RES/$w.cpuop.pairs" | sort -g | paste -sd' ')"
done
echo "workload CPU per op, median baseline -> monitored:"
for w in "${WORKLOADS[@]}"; do
	echo "  $w: $(median <"$RES/$w.cpuop.base") -> $(median <"$RES/$w.cpuop.mon") $(opunit "$w")"
done
echo "checks (after stopping the daemon, rows of the bench executables in its database):"
awk -v n="$STORM_CONNS" '{ s += $2; r += $3 } END { printf "  tcp_storm: %d rounds x %d connections x 100 bytes: missing sent bytes %d, missing received bytes %d -> lost events: %s\n", NR, n, s, r, (s == 0 && r == 0) ? "0" : "SOME" }' "$RES/tcp_storm.check"
awk '{ s += $2 } END { printf "  exec_storm: %d rounds: missing child bytes %d -> %s\n", NR, s, s == 0 ? "all children counted" : "SOME CHILDREN MISSING" }' "$RES/exec_storm.check"
echo "  rows named like a bench helper but without its executable path: $(sort "$RES"/*.stray | uniq -c | awk '{ $1 = $1 " run(s):"; print }' | paste -sd';')"
echo "  losses table (machine-wide counters: they include other processes running at the same time):"
for w in "${WORKLOADS[@]}"; do
	if [[ -s $RES/$w.losses ]]; then echo "    $w: $(paste -sd';' "$RES/$w.losses")"; else echo "    $w: empty"; fi
done
echo "other load on the machine during runs (% of all CPUs, not this benchmark): median $(median <"$RES/other"), max $(sort -g "$RES/other" | tail -1)"
if [[ -s $RES/foreign ]]; then
	echo "another picosnitch was running during: $(paste -sd',' "$RES/foreign")"
else
	echo "no other picosnitch process was seen during the runs"
fi
