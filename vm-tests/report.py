#!/usr/bin/env python3
# report.py: reads the serial logs of the kernel-matrix VMs and prints one line per kernel x hook
# set x case; exits 1 on any FAIL or on a VM that did not finish.
import os
import re
import sys

FIELD = re.compile(r"(\w+)=(\S+)")


def fields(line):
    return dict(FIELD.findall(line))


def read(log):
    """The RESULT lines, the doctor verdict, the last line and the VM's time of one serial log."""
    out = {"results": [], "doctor": None, "done": None, "vm": None, "release": None, "started": []}
    with open(log, errors="replace") as f:
        for raw in f:
            line = raw.strip().replace("\r", "")
            # The serial console may start a line with kernel messages or escape codes.
            for tag in ("RESULT ", "DOCTOR kernel=", "DONE kernel=", "VM label=", "STARTED ", "BOOTED "):
                i = line.find(tag)
                if i < 0:
                    continue
                rest = line[i:]
                f_ = fields(rest)
                if tag == "RESULT ":
                    verdict = "PASS" if re.search(r"\sPASS( \(.*\))?$", rest) else "FAIL"
                    why = re.search(r"(?:FAIL|PASS) \((.*)\)$", rest)
                    f_["verdict"] = verdict
                    f_["why"] = why.group(1) if why else ""
                    out["results"].append(f_)
                elif tag == "DOCTOR kernel=":
                    out["doctor"] = f_
                elif tag == "DONE kernel=":
                    out["done"] = f_
                elif tag == "VM label=":
                    out["vm"] = f_
                elif tag == "STARTED ":
                    out["started"].append(f_)
                else:
                    out["release"] = f_.get("kernel")
                break
    return out


def main():
    logs, labels = sys.argv[1], sys.argv[2:]
    failed = 0
    print(
        f"{'kernel':<22} {'hooks':<7} {'mode':<6} {'case':<19} {'sent':>19} {'received':>19} "
        f"{'misses':>6}  verdict"
    )
    summary = []
    for label in labels:
        path = os.path.join(logs, label + ".log")
        if not os.path.exists(path):
            print(f"{label:<22} no serial log")
            failed += 1
            continue
        r = read(path)
        release = r["release"] or label
        for x in r["results"]:
            verdict = x["verdict"] + (f" ({x['why']})" if x["why"] else "")
            print(
                f"{release:<22} {x.get('hooks', '?'):<7} {x.get('mode', '?'):<6} {x.get('case', '?'):<19} "
                f"{x.get('sent', '-'):>19} {x.get('recv', '-'):>19} {x.get('misses', '-'):>6}  {verdict}"
            )
            if x["verdict"] != "PASS":
                failed += 1
        doc = r["doctor"] or {}
        vm = r["vm"] or {}
        npass = sum(1 for x in r["results"] if x["verdict"] == "PASS")
        nfail = len(r["results"]) - npass
        state = "finished" if r["done"] else "DID NOT FINISH"
        if not r["done"]:
            failed += 1
        summary.append(
            f"{label:<5} {release:<22} doctor chose {doc.get('chose', '?'):<7} attachable "
            f"{doc.get('attach', '?'):<20} DNS {doc.get('dns', '?'):<8} {npass} passed, {nfail} failed; VM {state} in "
            f"{vm.get('seconds', '?')} s (qemu status {vm.get('qemu_status', '?')}, boots {vm.get('boots', '?')})"
        )
    print()
    for s in summary:
        print(s)
    print("kernel matrix:", "FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
