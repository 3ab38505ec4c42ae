#!/bin/bash
# systemd-guest.sh: the test inside the systemd VM of vm-tests/systemd.sh: installs picosnitch as a user would, runs its units under systemd (PID 1) and prints one RESULT line per check.
#
# Runs as picosnitch-vm-test.service (After=multi-user.target, output on /dev/ttyS1); the unit
# powers the VM off when this script ends. Lines: BOOTED, RESULT CHECK PASS|FAIL (detail),
# prefixed diagnostics ("NAME| ..."), DONE pass=N fail=N, or ERROR when the script itself broke.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SRC=/opt/picosnitch-vm
BIN=/usr/local/bin
DB=/var/lib/picosnitch/picosnitch.db
LOGDIR=/var/log/picosnitch
CONF=/etc/picosnitch/config.toml
UNIT=picosnitch.service
SOCK=/run/picosnitch/api.sock
TCP=127.0.0.1:5100
PY="python3 $SRC/systemd-guest.py"
PASS=0
FAIL=0
trap 'echo "ERROR line $LINENO: $BASH_COMMAND (status $?)"' ERR

up() { cut -d' ' -f1 /proc/uptime; }

result() { # check PASS|FAIL detail
	echo "RESULT $1 $2 ($3)"
	if [ "$2" = PASS ]; then PASS=$((PASS + 1)); else FAIL=$((FAIL + 1)); fi
}

show() { sed "s/^/$1| /"; } # every line of stdin, prefixed

prop() { systemctl show -p "$1" --value "${2:-$UNIT}"; }

# Retries a command every half second until it succeeds or SECONDS pass.
wait_for() { # seconds command...
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.5
	done
}

# Value of a flat JSON key (numbers and strings) of trafficgen's result line.
jget() { sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p" "$1"; }

# Runs the generator; its JSON result line goes to FILE.json (exact bytes of every process).
gen() { # file exe case args...
	local f=$1
	shift
	if ! "$@" </dev/null 2>"$f.err" | grep '^{' | tail -n 1 >"$f.json" || ! [ -s "$f.json" ]; then
		show "GEN $*" <"$f.err"
		return 1
	fi
}

sq() { sqlite3 -readonly -batch -noheader "$DB" "$1" </dev/null; }

# "send recv rows" of an executable in the database; with ports, of that connection only.
bytes_of() { # exe [lport rport]
	local w="e.exe = '$1'"
	[ $# -lt 3 ] || w="$w AND c.lport = $2 AND c.rport = $3"
	sq "SELECT coalesce(sum(c.send), 0) || ' ' || coalesce(sum(c.recv), 0) || ' ' || count(*)
	    FROM connections c JOIN executables e ON e.id = c.exe_id WHERE $w" 2>&1
}

# What the database must hold for an executable after the generator runs of these result files:
# each client connection's own bytes, and the executable's totals (clients and forked servers).
expect() { # exe file...
	local exe=$1 f s=0 r=0
	shift
	WANT=()
	for f in "$@"; do
		WANT+=("$exe $(jget "$f.json" lport) $(jget "$f.json" rport)=$(jget "$f.json" sent) $(jget "$f.json" received)")
		s=$((s + $(jget "$f.json" sent) + $(jget "$f.json" server_sent)))
		r=$((r + $(jget "$f.json" received) + $(jget "$f.json" server_received)))
	done
	WANT+=("$exe=$s $r")
	WANT_TOTAL="$s $r"
}

# True when every entry of WANT is in the database; GOT says what was found.
db_matches() {
	local w key got ok=0
	GOT=""
	for w in "${WANT[@]}"; do
		key=${w%%=*}
		# shellcheck disable=SC2086
		got=$(bytes_of $key)
		GOT="${GOT:+$GOT; }${key#"$BIN/"}: send recv rows $got (want ${w#*=})"
		[ "${got% *}" = "${w#*=}" ] || ok=1
	done
	return $ok
}

echo "BOOTED kernel=$(uname -r) $(systemctl --version | sed -n 1p) state=$(systemctl is-system-running || true) uptime=$(up)"

# ---- install as the README says: binary, units, enable --now ----
install -m 0755 "$SRC/picosnitch" "$BIN/picosnitch"
# The generator under three names (one per phase): each is a new program to the daemon.
for n in tg-running tg-reload tg-stop; do install -m 0755 "$SRC/trafficgen" "$BIN/$n"; done
mkdir -p /etc/picosnitch
printf '[database]\nwrite_limit_seconds = 2\n' >"$CONF"
t0=$SECONDS
if picosnitch systemd 2>&1 | show SYSTEMD && systemctl enable --now picosnitch.socket "$UNIT" 2>&1 | show ENABLE &&
	[ "$(prop ActiveState)" = active ] && [ "$(prop ActiveState picosnitch.socket)" = active ]; then
	result units PASS "written and started in $((SECONDS - t0)) s; service $(prop SubState), socket $(prop SubState picosnitch.socket) on $(prop Listen picosnitch.socket | paste -sd ' ')"
else
	systemctl status --no-pager "$UNIT" picosnitch.socket 2>&1 | show STATUS || true
	result units FAIL "service $(prop ActiveState)/$(prop Result), socket $(prop ActiveState picosnitch.socket)"
fi
journalctl -u "$UNIT" --no-pager -o cat -n 20 | show "START"
HOOKS=$(journalctl -u "$UNIT" --no-pager -o cat | sed -n 's/.*picosnitch is monitoring (hook set \([a-z_]*\)).*/\1/p' | sed -n 1p)

# ---- 1. exact bytes in the database while the daemon runs ----
gen /tmp/run-up "$BIN/tg-running" tcp-up --bytes 1234567
gen /tmp/run-down "$BIN/tg-running" tcp-down --bytes 654321
expect "$BIN/tg-running" /tmp/run-up /tmp/run-down
RUNNING_TOTAL=$WANT_TOTAL
t0=$SECONDS
if wait_for 60 db_matches; then
	result db-running PASS "after $((SECONDS - t0)) s: $GOT"
else
	result db-running FAIL "$GOT"
fi

# ---- 2. the journal: the new-program entry with its fields ----
SHA=$(sha256sum "$BIN/tg-running" | cut -d' ' -f1)
journal_entry() {
	journalctl -u "$UNIT" -o json --no-pager "EXE=$BIN/tg-running" >/tmp/journal.json
	$PY journal /tmp/journal.json "$BIN/tg-running" "$SHA" >/tmp/journal.out 2>&1
}
if wait_for 30 journal_entry; then
	result journal PASS "$(cat /tmp/journal.out)"
else
	show JOURNAL </tmp/journal.json
	result journal FAIL "$(tr '\n' ' ' </tmp/journal.out)"
fi

# ---- 3. STATUS= in systemctl status ----
STATUS_RE='hook set (tp_btf|fexit|kprobe); [1-9][0-9]* rows written \([^)]* sent, [^)]* received\); [0-9]+ losses'
st=$(systemctl status --no-pager -n 0 "$UNIT" 2>&1 || true)
line=$(grep -m 1 'Status: "' <<<"$st" || true)
text=$(prop StatusText)
if grep -qE "^ *Status: \"$STATUS_RE\"\$" <<<"$line" && grep -qE "^$STATUS_RE\$" <<<"$text"; then
	result status PASS "${line#"${line%%[! ]*}"}"
else
	show STATUS <<<"$st"
	result status FAIL "status line '$line', StatusText '$text'"
fi

# ---- 4. systemctl reload: SIGHUP reopens the logs (a rotated exe.log is made again) ----
pid=$(prop MainPID)
hups() { journalctl -u "$UNIT" --no-pager -o cat | grep -c 'SIGHUP: log files are reopened' || true; }
h0=$(hups)
mv "$LOGDIR/exe.log" "$LOGDIR/exe.log.1"
why=""
systemctl reload "$UNIT" >/tmp/reload.out 2>&1 || why="systemctl reload failed: $(tr '\n' ' ' </tmp/reload.out)"
reopened() { [ "$(hups)" -gt "$h0" ]; }
wait_for 20 reopened || why="${why:+$why; }no 'SIGHUP: log files are reopened' in the journal"
gen /tmp/reload "$BIN/tg-reload" tcp-up --bytes 1000
new_line() { grep -qF "tg-reload $BIN/tg-reload (new name, exe)" "$LOGDIR/exe.log" 2>/dev/null; }
if ! wait_for 30 new_line; then
	if grep -qF "$BIN/tg-reload" "$LOGDIR/exe.log.1"; then
		why="${why:+$why; }the new program went to the rotated exe.log.1"
	else
		why="${why:+$why; }no exe.log line for tg-reload"
	fi
fi
grep -qF "$BIN/tg-running (new name, exe)" "$LOGDIR/exe.log.1" || why="${why:+$why; }exe.log.1 lost the earlier lines"
[ "$(prop MainPID)" = "$pid" ] || why="${why:+$why; }the main pid changed ($pid -> $(prop MainPID))"
[ "$(prop ActiveState)" = active ] || why="${why:+$why; }service $(prop ActiveState)"
if [ -z "$why" ]; then
	result reload PASS "pid $pid kept, journal says the logs were reopened, exe.log made again: $(grep -m 1 -F "$BIN/tg-reload" "$LOGDIR/exe.log")"
else
	journalctl -u "$UNIT" --no-pager -o cat -n 10 | show RELOAD
	result reload FAIL "$why"
fi

# ---- 5. an invalid config value: failed, exit status 78, no restart ----
cp "$CONF" /tmp/config.good
printf '[log]\nignore_ips = ["10.0.0.0/8", "192.168.1.0/33"]\n' >>"$CONF"
picosnitch check-config "$CONF" 2>&1 | show CHECK-CONFIG || true
t0=$SECONDS
systemctl restart "$UNIT" >/tmp/restart.out 2>&1 && rs=0 || rs=$?
show RESTART </tmp/restart.out
# Longer than RestartSec=: a restart would have come by then.
rsec=$(prop RestartUSec)
case $rsec in *min* | *ms | *us | '') wait=15 ;; *s) wait=$((${rsec%s} + 4)) ;; *) wait=15 ;; esac
sleep "$wait"
got="ActiveState=$(prop ActiveState) Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus) NRestarts=$(prop NRestarts)"
sentence=$(journalctl -u "$UNIT" --no-pager -o cat | grep -m 1 -F 'log.ignore_ips[1] = "192.168.1.0/33" is not allowed' || true)
if [ "$rs" -ne 0 ] && [ "$got" = "ActiveState=failed Result=exit-code ExecMainStatus=78 NRestarts=0" ] && [ -n "$sentence" ]; then
	result bad-config PASS "$got after ${wait} s (RestartSec=$rsec); journal: $sentence"
else
	journalctl -u "$UNIT" --no-pager -o cat -n 10 | show BAD-CONFIG
	result bad-config FAIL "restart status $rs; $got after $((SECONDS - t0)) s; sentence '${sentence}'"
fi

# ---- 6. socket activation: only picosnitch.socket listens; a request starts the service ----
# The window stays open until the stop below (which must write it).
printf '[database]\nwrite_limit_seconds = 3600\n' >"$CONF"
systemctl reset-failed "$UNIT"
before="service $(prop ActiveState)/$(prop SubState), socket $(prop ActiveState picosnitch.socket)/$(prop SubState picosnitch.socket)"
t0=$SECONDS
if [ "$before" = "service inactive/dead, socket active/listening" ] &&
	$PY status "$SOCK" "$(uname -r)" >/tmp/api.out 2>&1 && [ "$(prop ActiveState)" = active ]; then
	result socket-activation PASS "$before; the unix socket answered after $((SECONDS - t0)) s: $(cat /tmp/api.out); service now $(prop ActiveState)/$(prop SubState), pid $(prop MainPID)"
else
	result socket-activation FAIL "$before; $(tr '\n' ' ' </tmp/api.out 2>/dev/null); service now $(prop ActiveState)/$(prop SubState)"
fi
if $PY aggregate "$TCP" "$BIN/tg-running" "${RUNNING_TOTAL% *}" "${RUNNING_TOTAL#* }" >/tmp/api-tcp.out 2>&1; then
	result api-tcp PASS "$(cat /tmp/api-tcp.out)"
else
	result api-tcp FAIL "$(tr '\n' ' ' </tmp/api-tcp.out)"
fi

# ---- 7. systemctl stop writes the open window ----
gen /tmp/stop-up "$BIN/tg-stop" tcp-up --bytes 765432
gen /tmp/stop-down "$BIN/tg-stop" tcp-down --bytes 23456
expect "$BIN/tg-stop" /tmp/stop-up /tmp/stop-down
early=$(bytes_of "$BIN/tg-stop")
t0=$SECONDS
systemctl stop "$UNIT" >/tmp/stop.out 2>&1 && ss=0 || ss=$?
took=$((SECONDS - t0))
got="ActiveState=$(prop ActiveState) Result=$(prop Result) ExecMainStatus=$(prop ExecMainStatus)"
why=""
[ "$ss" -eq 0 ] || why="systemctl stop status $ss: $(tr '\n' ' ' </tmp/stop.out)"
[ "$got" = "ActiveState=inactive Result=success ExecMainStatus=0" ] || why="${why:+$why; }$got"
# Written before the stop, the rows would not show what the stop writes.
[ "${early##* }" = 0 ] || why="${why:+$why; }rows were written before the stop ($early)"
if ! db_matches; then why="${why:+$why; }$GOT"; fi
if [ -z "$why" ]; then
	result stop-write PASS "stopped in $took s, $got; $GOT"
else
	journalctl -u "$UNIT" --no-pager -o cat -n 15 | show STOP
	result stop-write FAIL "$why"
fi

journalctl -u "$UNIT" -u picosnitch.socket --no-pager -o short-monotonic | show JOURNAL
echo "DONE pass=$PASS fail=$FAIL hooks=${HOOKS:-?} uptime=$(up)"
[ "$FAIL" = 0 ]
