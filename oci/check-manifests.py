#!/usr/bin/env python3
# oci/check-manifests.py: checks that every YAML file in oci/ parses and gives the sidecar what it needs (host namespaces, privileges, the mounts of mounts.txt, the config, the liveness probe), and that the run scripts and README agree.
"""Usage: oci/check-manifests.py [--binary PICOSNITCH]

With --binary, also compares capabilities.txt with the CapabilityBoundingSet= that
`picosnitch systemd` writes for oci/config.toml, and runs `picosnitch check-config --strict` on
the ConfigMap's text. Prints one line per problem and exits 1 when there is any.
"""
import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

import yaml

OCI = pathlib.Path(__file__).resolve().parent
REPO = OCI.parent
ENTRYPOINT = ["/usr/bin/picosnitch", "start-no-daemon", "--config", "/etc/picosnitch/config.toml"]
CONFIG_DIR = "/etc/picosnitch"

problems = []

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--binary", help="the picosnitch binary of the image")
args = parser.parse_args()


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def table(name):
    """The lines of mounts.txt or capabilities.txt without comments, split in fields."""
    rows = []
    for line in (OCI / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append(line.split())
    return rows


MOUNTS = []  # (kind, host, path, mode)
for f in table("mounts.txt"):
    if len(f) < 5 or f[0] not in ("host", "state", "tmpfs") or f[3] not in ("ro", "rw"):
        problem("mounts.txt", f"bad line {' '.join(f)!r}: kind host path ro|rw purpose")
        continue
    MOUNTS.append((f[0], f[1], f[2], f[3]))
CAPS = [f[0] for f in table("capabilities.txt")]
for c in CAPS:
    if not re.fullmatch(r"CAP_[A-Z_]+", c):
        problem("capabilities.txt", f"{c!r} is not a capability name")
BARE_CAPS = {c.removeprefix("CAP_") for c in CAPS}

CONFIG_TEXT = (OCI / "config.toml").read_text()
CONFIG = tomllib.loads(CONFIG_TEXT)
LISTEN = CONFIG.get("api", {}).get("listen", "127.0.0.1:5100")
m = re.fullmatch(r"\[?([^\]]*)\]?:(\d+)", LISTEN)
if not m:
    problem("config.toml", f"[api] listen = {LISTEN!r} is not HOST:PORT")
    LISTEN_HOST, LISTEN_PORT = "", 0
else:
    LISTEN_HOST, LISTEN_PORT = m.group(1), int(m.group(2))
data = CONFIG.get("data", {})
for key in ("owner", "group"):
    if not str(data.get(key, "")).isdigit():
        problem("config.toml", f"[data] {key} must be a number: a scratch image resolves no names")
if CONFIG.get("desktop", {}).get("notifications", True):
    problem("config.toml", "[desktop] notifications must be false (no session buses in a container)")


def api_routes():
    """The paths the API serves, from its router (daemon/src/api/mod.rs)."""
    src = REPO / "daemon/src/api/mod.rs"
    if not src.exists():
        return {"/api/v1/status", "/metrics"}
    return set(re.findall(r'\.route\("([^"]+)"', src.read_text()))


ROUTES = api_routes()

# ---- every YAML file parses ----
docs = {}  # path -> [documents]
for path in sorted(list(OCI.rglob("*.yaml")) + list(OCI.rglob("*.yml"))):
    rel = path.relative_to(OCI)
    try:
        docs[rel] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        problem(rel, f"does not parse: {e}")
        continue
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    if not first.startswith(f"# oci/{rel}:"):
        problem(rel, "the first line must be a comment saying what the file owns")
if not docs:
    problem("oci/", "no YAML files")


def k8s_objects(kind):
    return [(p, d) for p, ds in docs.items() for d in ds if isinstance(d, dict) and d.get("kind") == kind]


# ---- Kubernetes ----
namespaces = [d["metadata"]["name"] for _, d in k8s_objects("Namespace")]
if len(namespaces) != 1:
    problem("kubernetes/", f"expected one Namespace, found {namespaces}")
NS = namespaces[0] if namespaces else None
configmaps = {d["metadata"]["name"]: (p, d) for p, d in k8s_objects("ConfigMap")}
for p, d in k8s_objects("ConfigMap") + k8s_objects("DaemonSet"):
    if d["metadata"].get("namespace") != NS:
        problem(p, f"{d['kind']} {d['metadata']['name']} is in namespace {d['metadata'].get('namespace')!r}, not {NS!r}")

daemonsets = k8s_objects("DaemonSet")
if len(daemonsets) != 1:
    problem("kubernetes/", f"expected one DaemonSet, found {len(daemonsets)}")
for p, ds in daemonsets:
    spec = ds["spec"]["template"]["spec"]
    for key in ("hostPID", "hostNetwork"):
        if spec.get(key) is not True:
            problem(p, f"spec.template.spec.{key} must be true")
    if ds["spec"]["selector"]["matchLabels"].items() - ds["spec"]["template"]["metadata"].get("labels", {}).items():
        problem(p, "the selector does not match the pod template's labels")
    containers = spec.get("containers", [])
    if len(containers) != 1:
        problem(p, f"expected one container, found {len(containers)}")
        continue
    c = containers[0]
    if c.get("command") not in (None, ENTRYPOINT) or c.get("args"):
        problem(p, f"the container must run the image's entrypoint {ENTRYPOINT}, not command/args")
    sc = c.get("securityContext", {})
    if sc.get("runAsUser", 0) != 0 or sc.get("runAsNonRoot"):
        problem(p, "the container must run as root (uid 0)")
    if not sc.get("privileged"):
        caps = sc.get("capabilities", {})
        added = {x.removeprefix("CAP_") for x in caps.get("add", [])}
        for cap in sorted(BARE_CAPS - added):
            problem(p, f"securityContext.capabilities.add lacks {cap} (capabilities.txt)")
        for cap in sorted(added - BARE_CAPS):
            problem(p, f"securityContext.capabilities.add has {cap}, which capabilities.txt does not list")
        if "ALL" not in caps.get("drop", []):
            problem(p, "securityContext.capabilities.drop must be [ALL]: only the listed ones are kept")
        name = c["name"]
        annotation = ds["spec"]["template"]["metadata"].get("annotations", {}).get(
            f"container.apparmor.security.beta.kubernetes.io/{name}")
        if sc.get("appArmorProfile", {}).get("type") != "Unconfined" or annotation != "unconfined":
            problem(p, "AppArmor must be unconfined (appArmorProfile and the annotation): a confined "
                       "profile refuses /proc/PID/exe of other processes")
    if not sc.get("readOnlyRootFilesystem"):
        problem(p, "readOnlyRootFilesystem should be true: every file the daemon writes is on a volume")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {vm["mountPath"]: vm for vm in c.get("volumeMounts", [])}
    wanted = {path for _, _, path, _ in MOUNTS} | {CONFIG_DIR}
    for extra in sorted(set(mounts) - wanted):
        problem(p, f"volumeMount {extra} is not in mounts.txt")
    for kind, host, path, mode in MOUNTS:
        vm = mounts.get(path)
        if vm is None:
            problem(p, f"no volumeMount at {path} (mounts.txt: {kind} {host} {mode})")
            continue
        vol = volumes.get(vm["name"])
        if vol is None:
            problem(p, f"volumeMount {path} names volume {vm['name']!r}, which does not exist")
            continue
        if bool(vm.get("readOnly", False)) != (mode == "ro"):
            problem(p, f"volumeMount {path}: readOnly must be {mode == 'ro'} (mounts.txt: {mode})")
        if kind in ("host", "state"):
            hp = vol.get("hostPath")
            if not hp or hp.get("path") != host:
                problem(p, f"volume {vm['name']} ({path}) must be hostPath {host}")
            elif kind == "state" and hp.get("type") != "DirectoryOrCreate":
                problem(p, f"volume {vm['name']} ({host}): type DirectoryOrCreate (the state directory)")
        else:
            ed = vol.get("emptyDir")
            if ed is None or ed.get("medium") != "Memory":
                problem(p, f"volume {vm['name']} ({path}) must be an emptyDir with medium Memory (tmpfs)")
    cfg = mounts.get(CONFIG_DIR)
    if cfg is None:
        problem(p, f"no volumeMount at {CONFIG_DIR} for the ConfigMap")
    else:
        vol = volumes.get(cfg["name"], {})
        cm_name = vol.get("configMap", {}).get("name")
        if cm_name not in configmaps:
            problem(p, f"{CONFIG_DIR} must be a configMap volume of one of {sorted(configmaps)}, not {vol}")
        else:
            cm_path, cm = configmaps[cm_name]
            if cm["data"].get("config.toml") != CONFIG_TEXT:
                problem(cm_path, "data.config.toml is not the text of oci/config.toml")
            if vol["configMap"].get("items") not in (None, [{"key": "config.toml", "path": "config.toml"}]):
                problem(p, "the ConfigMap volume must give config.toml under its own name")
        if not cfg.get("readOnly"):
            problem(p, f"{CONFIG_DIR} should be mounted readOnly")
    for probe_name in ("livenessProbe", "readinessProbe"):
        probe = c.get(probe_name)
        if probe is None:
            if probe_name == "livenessProbe":
                problem(p, "no livenessProbe")
            continue
        get = probe.get("httpGet")
        if not get:
            problem(p, f"{probe_name} must be an httpGet against the API")
            continue
        if get.get("path") not in ROUTES or get["path"] == "/api/v1/events":
            problem(p, f"{probe_name} path {get.get('path')!r} is not an API route that answers at once ({sorted(ROUTES)})")
        port = get.get("port")
        if isinstance(port, str):
            port = next((cp["containerPort"] for cp in c.get("ports", []) if cp.get("name") == port), port)
        if port != LISTEN_PORT:
            problem(p, f"{probe_name} port {port} is not the port of [api] listen = {LISTEN!r}")
        host = get.get("host")
        if LISTEN_HOST not in ("0.0.0.0", "::") and host != LISTEN_HOST:
            problem(p, f"{probe_name} host {host!r}: the API listens on {LISTEN_HOST} only (hostNetwork: the node's)")
        if get.get("scheme", "HTTP") != "HTTP":
            problem(p, f"{probe_name}: the API speaks plain HTTP")
    for cp in c.get("ports", []):
        if cp.get("containerPort") != LISTEN_PORT:
            problem(p, f"containerPort {cp.get('containerPort')} is not the port of [api] listen = {LISTEN!r}")

kustomizations = [(p, d) for p, ds in docs.items() for d in ds
                  if isinstance(d, dict) and d.get("kind") == "Kustomization"]
for p, k in kustomizations:
    here = (OCI / p).parent
    listed = set(k.get("resources", []))
    present = {q.name for q in here.glob("*.yaml") if q.name != p.name}
    if listed != present:
        problem(p, f"resources {sorted(listed)} are not the manifests beside it {sorted(present)}")
    if k.get("namespace") not in (None, NS):
        problem(p, f"namespace {k.get('namespace')!r} is not {NS!r}")

# ---- compose ----
composes = [(p, d) for p, ds in docs.items() for d in ds if isinstance(d, dict) and "services" in d]
if len(composes) != 1:
    problem("compose.yaml", f"expected one compose file, found {len(composes)}")
for p, comp in composes:
    svc = comp["services"].get("picosnitch")
    if svc is None:
        problem(p, "no service picosnitch")
        continue
    for key, want in (("pid", "host"), ("network_mode", "host"), ("uts", "host"), ("cgroup", "host"),
                      ("read_only", True)):
        if svc.get(key) != want:
            problem(p, f"services.picosnitch.{key} must be {want!r}")
    if svc.get("entrypoint") or svc.get("command"):
        problem(p, "the service must run the image's entrypoint")
    if not svc.get("privileged"):
        added = {x.removeprefix("CAP_") for x in svc.get("cap_add", [])}
        if added != BARE_CAPS:
            problem(p, f"cap_add {sorted(added)} is not capabilities.txt {sorted(BARE_CAPS)}")
        if "ALL" not in svc.get("cap_drop", []):
            problem(p, "cap_drop must be [ALL]")
        if "apparmor=unconfined" not in svc.get("security_opt", []):
            problem(p, "security_opt must have apparmor=unconfined")
    binds = {}
    tmpfs = set()
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            binds[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
        elif v.get("type") == "bind" and "source" in v and "target" in v:
            binds[v["target"]] = (v["source"], bool(v.get("read_only", False)))
        elif v.get("type") == "tmpfs" and "target" in v:
            tmpfs.add(v["target"])
        else:
            problem(p, f"volume {v} is neither a bind with source and target nor a tmpfs with a target")
    t = svc.get("tmpfs", [])
    for entry in [t] if isinstance(t, str) else t:
        tmpfs.add(entry.split(":")[0])
    wanted = {path for _, _, path, _ in MOUNTS}
    for extra in sorted((set(binds) | tmpfs) - wanted):
        problem(p, f"mount {extra} is not in mounts.txt")
    for kind, host, path, mode in MOUNTS:
        if kind == "tmpfs":
            if path not in tmpfs:
                problem(p, f"no tmpfs at {path}")
        elif binds.get(path) != (host, mode == "ro"):
            problem(p, f"{path} must be a bind of {host}, read_only {mode == 'ro'} (found {binds.get(path)})")

# ---- the run scripts print what mounts.txt and capabilities.txt say ----
for script, priv in (("run-podman.sh", ["--privileged"]), ("run-docker.sh", None)):
    out = subprocess.run(["bash", str(OCI / script), "--print"], capture_output=True, text=True)
    if out.returncode != 0:
        problem(script, f"--print failed: {out.stderr.strip()}")
        continue
    words = shlex.split(out.stdout)
    for flag in ("--pid=host", "--network=host", "--uts=host", "--cgroupns=host", "--read-only"):
        if flag not in words:
            problem(script, f"the command lacks {flag}")
    if priv and not all(x in words for x in priv):
        problem(script, f"the command lacks {priv}")
    if priv is None:
        for cap in CAPS:
            if f"--cap-add={cap}" not in words:
                problem(script, f"the command lacks --cap-add={cap}")
        if "--cap-drop=all" not in words:
            problem(script, "the command lacks --cap-drop=all")
    for kind, host, path, mode in MOUNTS:
        if kind == "tmpfs":
            if not any(w.startswith(f"{path}:") for w in words):
                problem(script, f"the command has no --tmpfs {path}")
        elif f"{host}:{path}:{mode}" not in words:
            problem(script, f"the command lacks -v {host}:{path}:{mode}")
    if words[-1] != "localhost/picosnitch:latest":
        problem(script, f"the image comes last: {words[-1]}")

# ---- the README documents every mount and capability, and shows the scripts' commands ----
readme = (OCI / "README.md").read_text() if (OCI / "README.md").exists() else ""
shown = [" ".join(c.replace("\\\n", " ").split()) for c in re.findall(r"```sh\n(.*?)```", readme, re.S)]
for script, engine in (("run-podman.sh", "podman"), ("run-docker.sh", "docker")):
    out = subprocess.run(["bash", str(OCI / script), "--print"], capture_output=True, text=True)
    printed = " ".join(out.stdout.split())
    if not any(block == printed for block in shown):
        problem("README.md", f"no sh block shows the command `{script} --print` prints: {printed}")
for _, _, path, _ in MOUNTS:
    if f"`{path}`" not in readme:
        problem("README.md", f"the mount {path} is not documented")
for cap in CAPS:
    if cap not in readme:
        problem("README.md", f"the capability {cap} is not documented")

# ---- what the daemon itself says ----
if args.binary:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = pathlib.Path(tmp) / "config.toml"
        cfg.write_text(CONFIG_TEXT if not configmaps else next(iter(configmaps.values()))[1]["data"]["config.toml"])
        out = subprocess.run([args.binary, "check-config", "--strict", str(cfg)], capture_output=True, text=True)
        if out.returncode != 0:
            problem("configmap.yaml", f"picosnitch check-config --strict: {out.stderr.strip()}")
        units = pathlib.Path(tmp) / "units"
        out = subprocess.run([args.binary, "systemd", "--config", str(OCI / "config.toml"), "--unit-dir", str(units)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            problem("capabilities.txt", f"picosnitch systemd --unit-dir failed: {out.stderr.strip()}")
        else:
            unit = (units / "picosnitch.service").read_text()
            m = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M)
            bounding = m.group(1).split() if m else []
            if sorted(bounding) != sorted(CAPS):
                problem("capabilities.txt", f"{CAPS} differs from the unit's CapabilityBoundingSet={' '.join(bounding)} "
                                            "for oci/config.toml")

for p in problems:
    print(f"oci/check-manifests.py: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"oci/check-manifests.py: {len(docs)} YAML files, {len(MOUNTS)} mounts, {len(CAPS)} capabilities: ok")
