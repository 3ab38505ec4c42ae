#!/usr/bin/env python3
# systemd-guest.py: checks of systemd-guest.sh that read JSON: the journal's new-program entry and the HTTP API over the unix socket or TCP.
#
#   systemd-guest.py journal FILE EXE SHA256        FILE: `journalctl -o json` lines
#   systemd-guest.py status WHERE KERNEL            GET /api/v1/status
#   systemd-guest.py aggregate WHERE EXE SEND RECV  GET /api/v1/aggregate?by=exe&exe=EXE
# WHERE is a unix socket path or HOST:PORT. Prints what it found; exit status 0 when it is
# what was asked for, 1 otherwise.
import http.client
import json
import os
import socket
import sys
import urllib.parse

# Socket activation: the first answer waits for the daemon to start (BPF programs are
# verified under software emulation).
TIMEOUT = 120


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=TIMEOUT)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(self.unix_path)
        self.sock = s


def get(where, path):
    if where.startswith("/"):
        conn = UnixConnection(where)
    else:
        host, port = where.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    if r.status != 200:
        raise SystemExit(f"GET {path} on {where}: HTTP {r.status}: {body[:300]!r}")
    return json.loads(body)


def journal(file, exe, sha):
    want = {
        "DECISION": "NewExe",
        "EXE": exe,
        "NAME": os.path.basename(exe),
        "SHA256": sha,
        "UID": "0",
        "SYSLOG_IDENTIFIER": "picosnitch",
        "_SYSTEMD_UNIT": "picosnitch.service",
    }
    entries = []
    with open(file) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                entries.append(json.loads(line))
    # The program's own entry (level 0), not the one for it as a parent of its forked server.
    news = [e for e in entries if e.get("DECISION") == "NewExe" and e.get("LEVEL") == "0"]
    if not news:
        print(f"no DECISION=NewExe LEVEL=0 entry with EXE={exe} ({len(entries)} entries with that EXE)")
        return 1
    e = news[0]
    bad = [f"{k}={e.get(k)!r} (want {v!r})" for k, v in want.items() if e.get(k) != v]
    if not e.get("PARENT_EXE"):
        bad.append("no PARENT_EXE")
    if bad:
        print("; ".join(bad))
        return 1
    print(
        f"MESSAGE={e.get('MESSAGE')!r} EXE={e['EXE']} SHA256={e['SHA256'][:16]}… (= sha256sum)"
        f" NAME={e['NAME']} LEVEL={e['LEVEL']} PARENT_EXE={e['PARENT_EXE']} UID={e['UID']} PRIORITY={e.get('PRIORITY')}"
    )
    return 0


def status(where, kernel):
    s = get(where, "/api/v1/status")
    got = f"hook_set={s.get('hook_set')} kernel={s.get('kernel')} uptime_seconds={s.get('uptime_seconds')}"
    if s.get("hook_set") not in ("tp_btf", "fexit", "kprobe") or s.get("kernel") != kernel:
        print(f"{got} (want a hook set and kernel={kernel})")
        return 1
    print(got)
    return 0


def aggregate(where, exe, send, recv):
    q = urllib.parse.urlencode({"by": "exe", "exe": exe})
    a = get(where, f"/api/v1/aggregate?{q}")
    rows = a.get("rows", [])
    got = [(r.get("exe"), r.get("send"), r.get("recv")) for r in rows]
    if got != [(exe, int(send), int(recv))]:
        print(f"rows {got} (want [({exe!r}, {send}, {recv})]): {json.dumps(a)[:300]}")
        return 1
    print(f"GET /api/v1/aggregate?{q} on {where}: exe={exe} send={send} recv={recv}")
    return 0


def main():
    cmds = {"journal": (journal, 3), "status": (status, 2), "aggregate": (aggregate, 4)}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds or len(sys.argv) != cmds[sys.argv[1]][1] + 2:
        print(__doc__ or "usage: systemd-guest.py journal|status|aggregate ...", file=sys.stderr)
        return 2
    fn, _ = cmds[sys.argv[1]]
    try:
        return fn(*sys.argv[2:])
    except (OSError, ValueError, http.client.HTTPException) as e:
        print(f"{sys.argv[1]}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
