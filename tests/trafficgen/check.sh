#!/bin/bash
# Build trafficgen (static) and run every case once over loopback; each must
# exit 0 and report exactly the expected client sent/received byte counts.
# Needs root (raw/packet sockets, ping_group_range). Environment:
#   BIN=path        where to build the binary (default: next to this script)
#   DRIP_FULL=1     run drip with its defaults (60 x 1 s) instead of 5 x 100 ms
set -u
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$here/trafficgen}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
nserve=0

gcc -O2 -static -Wall -Werror -o "$BIN" "$here"/*.c || { echo "BUILD FAILED"; exit 1; }
echo "built $BIN"

field() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p" <<<"$2"; }

# check NAME JSON RC WANT_SENT WANT_RECEIVED
check() {
    local name=$1 json=$2 rc=$3 sent recv
    sent=$(field sent "$json")
    recv=$(field received "$json")
    if [[ $rc -eq 0 && $sent == "$4" && $recv == "$5" ]]; then
        printf 'PASS %-28s %s\n' "$name" "$(cut -c1-200 <<<"$json")"
    else
        printf 'FAIL %-28s rc=%s sent=%s (want %s) received=%s (want %s)\n     %s\n' \
            "$name" "$rc" "$sent" "$4" "$recv" "$5" "$json"
        fail=1
    fi
}

# run NAME WANT_SENT WANT_RECEIVED ARGS...
run() {
    local name=$1 ws=$2 wr=$3 out rc
    shift 3
    out=$(timeout 180 "$BIN" "$@" 2>"$tmp/err")
    rc=$?
    [[ -s $tmp/err ]] && sed 's/^/     stderr: /' "$tmp/err"
    check "$name" "$out" "$rc" "$ws" "$wr"
}

# serve NAME SRV_SENT SRV_RECV CLI_SENT CLI_RECV "SERVER ARGS" CLIENT ARGS...
# runs a standalone server in the background, then a --no-server client
serve() {
    local name=$1 ss=$2 sr=$3 cs=$4 cr=$5 sargs=$6 port spid i out rc
    local sout=$tmp/serve.$((++nserve)).out serr=$tmp/serve.$nserve.err
    shift 6
    : >"$sout"
    # shellcheck disable=SC2086
    timeout 180 "$BIN" $sargs >"$sout" 2>"$serr" &
    spid=$!
    for i in $(seq 100); do grep -q listening "$sout" && break; sleep 0.05; done
    port=$(field port "$(head -1 "$sout")")
    out=$(timeout 180 "$BIN" "$@" --no-server --port "${port:-0}" 2>"$tmp/err")
    rc=$?
    [[ -s $tmp/err ]] && sed 's/^/     stderr: /' "$tmp/err"
    check "$name (client)" "$out" "$rc" "$cs" "$cr"
    wait "$spid"
    rc=$?
    [[ -s $serr ]] && sed 's/^/     stderr: /' "$serr"
    check "$name (server)" "$(tail -1 "$sout")" "$rc" "$ss" "$sr"
}

N=1000000
run tcp-up               $N 0     tcp-up
run tcp-down             0 $N     tcp-down
run tcp-duplex           $N $N    tcp-duplex
run udp-connected        100000 100000 udp-connected
run udp-unconnected      100000 100000 udp-unconnected
run udp-mmsg             100000 100000 udp-mmsg
run icmp-ping            640 640  icmp-ping           # 10 x (8 + 56)
run icmp-raw             640 840  icmp-raw            # replies include the 20-byte IPv4 header
run raw-proto            5000 5200 raw-proto          # 10 x 500, received with IPv4 header
run packet               2000 2000 packet
run sendfile             $N 0     sendfile
run splice-recv          0 $N     splice-recv
run uring                $N $N    uring
run short-conns          50000 50000 short-conns      # 500 x 100
if [[ ${DRIP_FULL:-0} == 1 ]]; then
    run drip             600 600  drip
else
    run drip             50 50    drip --count 5 --interval-ms 100
fi
run storm                246800 0 storm               # 200 x 1234

# IPv6 variants
run tcp-up-v6            $N 0     tcp-up -6
run tcp-down-v6          0 $N     tcp-down -6
run tcp-duplex-v6        $N $N    tcp-duplex -6
run udp-connected-v6     100000 100000 udp-connected -6
run udp-unconnected-v6   100000 100000 udp-unconnected -6
run udp-mmsg-v6          100000 100000 udp-mmsg -6
run icmp-ping-v6         640 640  icmp-ping -6
run icmp-raw-v6          640 640  icmp-raw -6         # no IP header on IPv6 raw receive
run raw-proto-v6         5000 5000 raw-proto -6
run sendfile-v6          $N 0     sendfile -6
run splice-recv-v6       0 $N     splice-recv -6
run uring-v6             $N $N    uring -6
run short-conns-v6       50000 50000 short-conns -6
run storm-v6             246800 0 storm -6

# other TCP syscall families
for io in rw msg vec; do
    run "tcp-duplex --io $io" $N $N tcp-duplex --io $io
done

# standalone servers + --no-server clients
serve "serve-tcp sink"     0 $N   $N 0   "serve-tcp --mode sink"                 tcp-up
serve "serve-tcp source"   $N 0   0 $N   "serve-tcp --mode source"               tcp-down
serve "serve-tcp duplex"   $N $N  $N $N  "serve-tcp --mode duplex"               tcp-duplex
serve "serve-tcp echo"     $N $N  $N $N  "serve-tcp --mode echo"                 uring
serve "serve-tcp echo x50" 5000 5000 5000 5000 "serve-tcp --mode echo --count 50" short-conns --count 50
serve "serve-udp echo"     100000 100000 100000 100000 "serve-udp --mode echo"   udp-connected

if [[ $fail -eq 0 ]]; then echo "ALL PASSED"; else echo "SOME FAILED"; fi
exit $fail
