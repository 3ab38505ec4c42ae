#!/bin/sh
# guest-init.sh: /init of the kernel-matrix VM: runs picosnitch under every hook set this kernel
# takes, generates known traffic on loopback and checks the database; prints RESULT lines.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The kernel opens /dev/console for init only when the node exists in the initramfs.
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
ip link set lo up
ulimit -l unlimited 2>/dev/null
# A DNS server for the name cases (trafficgen's own: the VM has no dnsmasq): a CNAME and an A.
DNS_ZONE='vm.picosnitch.test=@edge.picosnitch.test,edge.picosnitch.test=127.0.0.77'
trafficgen serve-dns --addr 127.0.0.153 --zone "$DNS_ZONE" --timeout-ms 0 >/tmp/serve-dns.out 2>&1 &

KREL=$(uname -r)
# Modules for the cases this kernel builds as modules (SCTP), in the order vm-tests/modules.py
# wrote; one that does not load fails the cases that need it.
if [ -f "/lib/modules/$KREL/order" ]; then
	while read -r m; do
		insmod "/lib/modules/$KREL/$m" 2>/tmp/insmod.err || echo "MODULE kernel=$KREL $m: $(cat /tmp/insmod.err)"
	done <"/lib/modules/$KREL/order"
fi
PASS=0
FAIL=0
ME=$(readlink /proc/$$/exe)

up() { cut -d' ' -f1 /proc/uptime; }

# Program runs the kernel skipped so far, all BPF programs together (see bpfstat.c).
misses() { bpfstat | awk '{sub("recursion_misses=", "", $NF); n += $NF} END {print n + 0}'; }

# Prints every line of a file with a prefix, so the host can tell them apart from RESULT lines.
show() { sed "s/^/$1| /" "$2"; }

# Value of a flat JSON key (numbers and strings only).
jget() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1"; }

echo "BOOTED kernel=$KREL uptime=$(up) preempt=$(cat /sys/kernel/debug/sched/preempt 2>/dev/null | tr ' ' ,)"
picosnitch doctor >/tmp/doctor.txt 2>&1
show DOCTOR /tmp/doctor.txt
CHOSEN=$(awk '/<- would attach/ && $1 !~ /^dns/ {print $1}' /tmp/doctor.txt)
DNSCAP=$(awk '/<- would attach/ && $1 ~ /^dns/ {print $1}' /tmp/doctor.txt)
SETS=$(awk '$2 == "ok" && ($1 == "tp_btf" || $1 == "fexit" || $1 == "kprobe") {printf "%s ", $1}' /tmp/doctor.txt)
ATTACH=$(echo $SETS | tr ' ' ,)
# picosnitch.sets=auto on the kernel command line: only the set the daemon chooses itself (the
# fully preemptible kernels: see the README on forced trampoline sets there).
case " $(cat /proc/cmdline) " in *" picosnitch.sets=auto "*) SETS=$CHOSEN ;; esac
echo "DOCTOR kernel=$KREL chose=${CHOSEN:-none} attach=${ATTACH:-none} dns=${DNSCAP:-none}"

# name | generator arguments | rows: ports (client's lport+rport), server (rport), all | family | protocol
CASES='tcp-up|tcp-up|ports|2|6
tcp-down|tcp-down|ports|2|6
tcp-up-v6|tcp-up -6|ports|10|6
tcp-down-v6|tcp-down -6|ports|10|6
udp-connected|udp-connected|ports|2|17
udp-unconnected|udp-unconnected|ports|2|17
udp-unconnected-v6|udp-unconnected -6|ports|10|17
udp-nosrc|udp-nosrc|ports|2|17
udp-nosrc-v6|udp-nosrc -6|ports|10|17
icmp-ping|icmp-ping|all|2|1
sctp-stream|sctp-stream|ports|2|132
sctp-stream-v6|sctp-stream -6|ports|10|132
sctp-seqpacket|sctp-seqpacket|ports|2|132
sctp-seqpacket-v6|sctp-seqpacket -6|ports|10|132
sendfile|sendfile|ports|2|6
splice-recv|splice-recv|ports|2|6
storm|storm --count 50 --bytes 1234|server|2|6'

result() { # set mode case sent want_sent recv want_recv rows verdict [why]
	m=$(cat "/tmp/tg/$1/$3.misses" 2>/dev/null || echo -)
	echo "RESULT kernel=$KREL hooks=$1 mode=$2 case=$3 sent=$4/$5 recv=$6/$7 rows=$8 misses=$m $9${10:+ (${10})}"
	if [ "$9" = PASS ]; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
}

# Checks one case against the database of one daemon run.
check() { # set mode db name pick family protocol
	set_=$1 mode=$2 db=$3 name=$4 pick=$5 fam=$6 proto=$7
	exe=/tmp/tg/$set_/$name
	json=/tmp/tg/$set_/$name.json
	if ! grep -q '^{' "$json" 2>/dev/null; then
		show "GEN $name" /tmp/tg/$set_/$name.err
		result "$set_" "$mode" "$name" - - - - 0 FAIL "generator failed"
		return
	fi
	grep '^{' "$json" | tail -n 1 >"$json.last"
	ws=$(jget "$json.last" sent)
	wr=$(jget "$json.last" received)
	lport=$(jget "$json.last" lport)
	rport=$(jget "$json.last" rport)
	where="e.exe = '$exe'"
	parent=$ME
	case $pick in
	ports) where="$where AND c.lport = $lport AND c.rport = $rport" ;;
	server)
		where="$where AND c.rport = $rport"
		parent=$exe
		;;
	esac
	from="FROM connections c JOIN executables e ON e.id = c.exe_id
	      JOIN executables p ON p.id = c.pexe_id WHERE $where"
	# One sqlite3 run per case (each start of the dynamically linked sqlite3 is slow under TCG).
	q="SELECT coalesce(sum(c.send),0), coalesce(sum(c.recv),0), count(*),
	          coalesce(group_concat(DISTINCT e.sha256),'-'), coalesce(group_concat(DISTINCT p.exe),'-'),
	          coalesce(group_concat(DISTINCT c.family || '/' || c.protocol || '/' || c.uid),'-') $from"
	row=$(sqlite3 -separator ' ' "$db" "$q" </dev/null 2>&1)
	set -- $row
	s=${1:--} r=${2:--} n=${3:-0}
	why=""
	[ "$s" = "$ws" ] && [ "$r" = "$wr" ] || why="bytes differ"
	m=$(cat "/tmp/tg/$set_/$name.misses" 2>/dev/null || echo 0)
	[ -z "$why" ] || [ "$m" = 0 ] || why="$why; the kernel skipped $m BPF program runs (recursion_misses)"
	sha=$(sha256sum "$exe" | cut -d' ' -f1)
	[ "$4" = "$sha" ] || why="${why:+$why, }sha256 '$4' != $sha"
	[ "$5" = "$parent" ] || why="${why:+$why, }parent '$5' != $parent"
	[ "$6" = "$fam/$proto/0" ] || why="${why:+$why, }family/protocol/uid '$6' != $fam/$proto/0"
	[ $# -eq 6 ] || why="${why:+$why, }query: $row"
	if [ -z "$why" ]; then
		result "$set_" "$mode" "$name" "$s" "$ws" "$r" "$wr" "$n" PASS
	else
		result "$set_" "$mode" "$name" "$s" "$ws" "$r" "$wr" "$n" FAIL "$why"
		# Where the bytes went: every row of this executable or these ports, and the losses.
		near="e.exe = '$exe'"
		[ -n "$rport" ] && [ "$rport" != null ] && near="$near OR c.rport = $rport OR c.lport = $rport"
		sqlite3 -header "$db" "SELECT e.exe, p.exe AS pexe, e.sha256, c.family, c.protocol,
			c.lport, c.rport, c.send, c.recv, c.events FROM connections c
			JOIN executables e ON e.id = c.exe_id JOIN executables p ON p.id = c.pexe_id
			WHERE $near; SELECT * FROM losses;" </dev/null >/tmp/rows.txt 2>&1
		show "ROWS $set_ $name" /tmp/rows.txt
		show "JSON $set_ $name" "$json.last"
	fi
}

# The connection after a lookup by trafficgen's own resolver (UDP and TCP) carries the name.
dns_cases() { # set
	for t in udp tcp; do
		flag=""
		[ $t = tcp ] && flag=--dns-tcp
		"/tmp/tg/$1/dns-$t" tcp-up --bytes 100 --resolve vm.picosnitch.test --dns 127.0.0.153 $flag \
			</dev/null >"/tmp/tg/$1/dns-$t.json" 2>"/tmp/tg/$1/dns-$t.err"
	done
}

dns_check() { # set mode db capture
	for t in udp tcp; do
		name=dns-$t
		json=/tmp/tg/$1/$name.json
		if ! grep -q '^{' "$json" 2>/dev/null; then
			show "GEN $name" "/tmp/tg/$1/$name.err"
			result "$1" "$2" "$name" - - - - 0 FAIL "generator failed"
			continue
		fi
		grep '^{' "$json" | tail -n 1 >"$json.last"
		lport=$(jget "$json.last" lport)
		rport=$(jget "$json.last" rport)
		got=$(sqlite3 "$3" "SELECT coalesce(group_concat(DISTINCT d.domain),'-') || ' ' || count(*)
			FROM connections c JOIN executables e ON e.id = c.exe_id JOIN domains d ON d.id = c.domain_id
			WHERE e.exe = '/tmp/tg/$1/$name' AND c.lport = $lport AND c.rport = $rport" </dev/null 2>&1)
		dom=${got% *}
		n=${got##* }
		if [ "$dom" = test.picosnitch.vm ]; then
			result "$1" "$2" "$name" - - - - "$n" PASS "domain $dom, capture $4"
		else
			result "$1" "$2" "$name" - - - - "$n" FAIL "domain '$dom' != test.picosnitch.vm, capture $4"
		fi
	done
}

# waits up to $2 tenths of a second for a line in exe.log; prints the tenths waited, or fails.
wait_line() { # exe.log needle tenths
	t=0
	while [ $t -lt "$3" ]; do
		grep -qF "$2" "$1" 2>/dev/null && { echo $t; return 0; }
		sleep 0.1
		t=$((t + 1))
	done
	return 1
}

# An executable the daemon holds open is modified in place (fanotify): reported, and how fast.
modified_case() { # set mode root
	log=$3/var/log/picosnitch/exe.log
	mod=/tmp/tg/$1/modified
	cp /bin/trafficgen "$mod"
	"$mod" tcp-up --bytes 100 </dev/null >/dev/null 2>&1
	if ! wait_line "$log" "$mod (new name, exe)" 100 >/dev/null; then
		result "$1" "$2" fanotify - - - - 0 FAIL "the new program was not reported"
		return
	fi
	printf 'modified' >>"$mod"
	sha=$(sha256sum "$mod" | cut -c1-16)
	if t=$(wait_line "$log" "$sha $mod (modified on disk)" 50); then
		result "$1" "$2" fanotify - - - - 0 PASS "reported after $((t * 100)) ms"
	else
		show "EXELOG $1" "$log"
		result "$1" "$2" fanotify - - - - 0 FAIL "no modification reported within 5 s"
	fi
}

# One daemon run with one hook set: start, every case, SIGTERM, checks.
run_set() { # set mode
	set_=$1 mode=$2
	root=/tmp/ps-$set_
	mkdir -p "$root" /tmp/tg/$set_
	hs=$set_
	[ "$mode" = auto ] && hs=auto
	printf '[database]\nwrite_limit_seconds = 1\n[monitoring]\nhook_set = "%s"\n' "$hs" >"$root/config.toml"
	# Copies first: a copy still open for writing would make a later exec fail with ETXTBSY.
	echo "$CASES" | while IFS='|' read -r name args pick fam proto; do
		cp /bin/trafficgen "/tmp/tg/$set_/$name"
	done
	cp /bin/trafficgen "/tmp/tg/$set_/dns-udp"
	cp /bin/trafficgen "/tmp/tg/$set_/dns-tcp"
	t0=$(up)
	PICOSNITCH_ROOT=$root NO_COLOR=1 picosnitch start-no-daemon --config "$root/config.toml" \
		2>"$root/daemon.log" &
	pid=$!
	i=0
	while ! grep -q "picosnitch is monitoring" "$root/daemon.log"; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 $pid 2>/dev/null; then
			show "DAEMON $set_" "$root/daemon.log"
			echo "$CASES" | while IFS='|' read -r name rest; do
				echo "RESULT kernel=$KREL hooks=$set_ mode=$mode case=$name sent=-/- recv=-/- rows=0 FAIL (daemon did not start)"
			done
			FAIL=$((FAIL + 1))
			kill -9 $pid 2>/dev/null
			return
		fi
		sleep 0.1
	done
	got=$(sed -n 's/.*picosnitch is monitoring (hook set \([a-z_]*\)).*/\1/p' "$root/daemon.log" | head -n 1)
	echo "STARTED kernel=$KREL hooks=$got mode=$mode after=$(up)-$t0"
	echo "$CASES" | while IFS='|' read -r name args pick fam proto; do
		m0=$(misses)
		# shellcheck disable=SC2086
		"/tmp/tg/$set_/$name" $args </dev/null >"/tmp/tg/$set_/$name.json" 2>"/tmp/tg/$set_/$name.err"
		# BPF program runs the kernel skipped while this case ran.
		echo $(($(misses) - m0)) >"/tmp/tg/$set_/$name.misses"
	done
	dns_cases "$set_"
	modified_case "$set_" "$mode" "$root"
	# Runs the kernel skipped because a BPF program was already running on that CPU.
	bpfstat >/tmp/bpfstat.txt 2>&1
	show "BPFSTAT $set_" /tmp/bpfstat.txt
	misses=$(awk '{sub("recursion_misses=", "", $NF); n += $NF} END {print n + 0}' /tmp/bpfstat.txt)
	kill -TERM $pid
	wait $pid
	rc=$?
	show "DAEMON $set_" "$root/daemon.log"
	echo "STOPPED kernel=$KREL hooks=$got mode=$mode status=$rc elapsed=$(up)-$t0 recursion_misses=$misses"
	if [ "$got" != "$set_" ] || [ $rc -ne 0 ]; then
		echo "RESULT kernel=$KREL hooks=$set_ mode=$mode case=daemon sent=-/- recv=-/- rows=0 FAIL (attached '$got', exit status $rc)"
		FAIL=$((FAIL + 1))
	fi
	db=$root/var/lib/picosnitch/picosnitch.db
	cap=$(sed -n 's/.*DNS answers are captured[^(]*(\(dns[a-z_]*\)).*/\1/p' "$root/daemon.log" | head -n 1)
	dns_check "$set_" "$mode" "$db" "${cap:-none}"
	while IFS='|' read -r name args pick fam proto; do
		check "$set_" "$mode" "$db" "$name" "$pick" "$fam" "$proto"
	done <<EOF
$CASES
EOF
	losses_check "$set_" "$mode" "$db"
}

# No kernel-side loss in the whole run: runs the kernel skipped (recursion_misses of the counting
# programs) were all counted again by their twins (rs_*), and no return probe was missed.
losses_check() { # set mode db
	got=$(sqlite3 "$3" "SELECT coalesce(group_concat(source || '=' || n), '') FROM (SELECT source,
		sum(count) AS n FROM losses WHERE source IN ('recursion_misses', 'kretprobe_missed',
		'totals_map_full', 'proc_ringbuf_full', 'peer_unreadable') GROUP BY source)" </dev/null 2>&1)
	skipped=$(awk '$4 !~ /^name=rs_/ {sub("recursion_misses=", "", $NF); n += $NF} END {print n + 0}' /tmp/bpfstat.txt)
	twins=$(awk '$4 ~ /^name=rs_/ {sub("recursion_misses=", "", $NF); n += $NF} END {print n + 0}' /tmp/bpfstat.txt)
	how="the kernel skipped $skipped runs of counting programs and $twins of their twins"
	if [ -z "$got" ]; then
		result "$1" "$2" losses - - - - 0 PASS "none; $how"
	else
		result "$1" "$2" losses - - - - 0 FAIL "$got; $how"
	fi
}

if [ -z "$CHOSEN" ]; then
	echo "RESULT kernel=$KREL hooks=none mode=auto case=doctor sent=-/- recv=-/- rows=0 FAIL (no hook set attaches)"
	FAIL=$((FAIL + 1))
fi
for hookset in $SETS; do
	if [ "$hookset" = "$CHOSEN" ]; then run_set "$hookset" auto; else run_set "$hookset" forced; fi
done
echo "DONE kernel=$KREL pass=$PASS fail=$FAIL uptime=$(up)"
sync
poweroff -f
