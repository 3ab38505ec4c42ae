#!/usr/bin/env bash
# run.sh: picosnitch's kernel matrix: boots Debian kernels under QEMU and checks in each that the daemon counts known loopback traffic exactly.
#
# Usage: vm-tests/run.sh            (as root; prints one line per kernel x hook set x case)
# Environment:
#   PICOSNITCH_VM_KERNELS  labels to run, from the table below (default: all)
#   PICOSNITCH_VM_CACHE    downloaded kernels and apt lists (default /var/cache/picosnitch-vm)
#   PICOSNITCH_VM_LOGS     serial logs and the summary (default $CARGO_TARGET_DIR/vm-tests or target/vm-tests)
#   PICOSNITCH_VM_JOBS     VMs at a time (default 2)   PICOSNITCH_VM_SMP / _MEM   per VM (2 / 1024)
#   PICOSNITCH_VM_TIMEOUT  seconds per VM (default 300)
#   PICOSNITCH_VM_NO_BUILD=1  reuse the binaries of the last build
#   PICOSNITCH_VM_APPEND   more kernel command line for every VM
set -euo pipefail
START=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${PICOSNITCH_VM_CACHE:-/var/cache/picosnitch-vm}
LOGS=${PICOSNITCH_VM_LOGS:-$TARGET/vm-tests}
JOBS=${PICOSNITCH_VM_JOBS:-2}
SMP=${PICOSNITCH_VM_SMP:-2}
MEM=${PICOSNITCH_VM_MEM:-1024}
TIMEOUT=${PICOSNITCH_VM_TIMEOUT:-300}
ACCEL=${PICOSNITCH_VM_ACCEL:-tcg,thread=single}
APPEND=${PICOSNITCH_VM_APPEND:-}
MIRROR=http://deb.debian.org

# label  suite  package (a meta-package is followed to the package that holds the kernel)  [kernel
# command line]. 6.12-full: the same kernel with full preemption, where the kernel skips a tracing
# program preempted while another run of it is active on that CPU (as on every 7.x kernel); on
# these two only the hook set the daemon chooses runs (picosnitch.sets=auto, see guest-init.sh).
KERNEL_TABLE='5.10 bullseye linux-image-amd64
6.1 bookworm linux-image-amd64
6.12 bookworm linux-image-6.12-amd64
6.12-full bookworm linux-image-6.12-amd64 preempt=full picosnitch.sets=auto
sid sid linux-image-amd64 picosnitch.sets=auto'
# Modules the guest loads (with what they need) for the cases the host kernel cannot run.
MODULES='sctp'
WANT=${PICOSNITCH_VM_KERNELS:-$(awk '{printf "%s ", $1}' <<<"$KERNEL_TABLE")}

# shellcheck source=vm-tests/common.sh
. "$HERE/common.sh"

# ---- 1. tools ----

check_tools() {
	local missing=() t
	for t in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static cpio:cpio sqlite3:sqlite3 \
		gcc:gcc python3:python3 dpkg-deb:dpkg apt-get:apt zstd:zstd timeout:coreutils \
		cargo:cargo clang:clang; do
		command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
	done
	if command -v busybox >/dev/null && ! is_static "$(command -v busybox)"; then
		missing+=("busybox-static (busybox is dynamically linked)")
	fi
	[ ${#missing[@]} -eq 0 ] || die "missing tools; install the Debian packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "run as root (the kernel cache is under $CACHE)"
}

# ---- 2. static binaries ----
build() {
	WORK=$TARGET/vm-tests/work
	mkdir -p "$WORK"
	DAEMON=$TARGET/x86_64-unknown-linux-gnu/release/picosnitch
	if [ "${PICOSNITCH_VM_NO_BUILD:-}" != 1 ]; then
		say "building the static daemon (cargo build --release --target x86_64-unknown-linux-gnu)"
		(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
			cargo build --release --target x86_64-unknown-linux-gnu --bin picosnitch --quiet)
		gcc -O2 -static -Wall -Werror -o "$WORK/trafficgen" "$ROOT"/tests/trafficgen/*.c
		gcc -O2 -static -Wall -Werror -o "$WORK/bpfstat" "$HERE/bpfstat.c"
	fi
	for f in "$DAEMON" "$WORK/trafficgen" "$WORK/bpfstat"; do
		[ -x "$f" ] || die "$f was not built"
		is_static "$f" || die "$f is not statically linked"
	done
}

# ---- 3. kernels: apt-get download with a private apt configuration per suite ----
apt_opts() { # suite
	local d=$CACHE/apt/$1
	APT=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status"
		-o Acquire::Languages=none -o APT::Get::List-Cleanup=false -o APT::Sandbox::User=root
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::CNF::DefaultEnabled=false)
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	touch "$d/status"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	{
		echo "deb [signed-by=$key] $MIRROR/debian $1 main"
		case $1 in
		sid | unstable) ;;
		*) echo "deb [signed-by=$key] $MIRROR/debian-security $1-security main" ;;
		esac
	} >"$d/sources.list"
}

apt_update() { # suite
	say "apt-get update for $1"
	apt-get "${APT[@]}" update -qq >&2 || say "apt-get update for $1 failed; using the lists already there"
}

# Follows Depends from a meta-package to the package that holds /boot/vmlinuz-*.
resolve() { # package
	local p=$1 n i
	for i in 1 2 3 4; do
		n=$(apt-cache "${APT[@]}" depends --no-pre-depends --no-recommends --no-suggests \
			--no-conflicts --no-breaks --no-replaces --no-enhances "$p" 2>/dev/null |
			awk '$1 == "Depends:" && $2 ~ /^linux-(image|binary)-[0-9]/ {print $2; exit}')
		[ -n "$n" ] || break
		p=$n
	done
	echo "$p"
}

# Prints the path of an uncompressed vmlinux for a kernel of the table, downloading it if needed.
fetch_kernel() { # label suite package
	local label=$1 suite=$2 meta=$3 pkg deb dir tmp z
	apt_opts "$suite"
	if [ -z "$(find "$CACHE/apt/$suite/lists" -name '*Packages*' -mmin -1440 2>/dev/null)" ]; then
		apt_update "$suite"
	fi
	pkg=$(resolve "$meta")
	[ "$pkg" != "$meta" ] || pkg=$(cat "$CACHE/resolved-$label" 2>/dev/null || echo "$meta")
	echo "$pkg" >"$CACHE/resolved-$label"
	dir=$CACHE/kernels/$pkg
	if [ ! -s "$dir/vmlinux" ] || [ ! -e "$dir/modules.ok" ]; then
		mkdir -p "$CACHE/debs"
		deb=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | tail -n 1 || true)
		if [ -z "$deb" ]; then
			say "downloading $pkg ($suite)"
			if ! (cd "$CACHE/debs" && apt-get "${APT[@]}" download -qq "$pkg" >&2); then
				apt_update "$suite"
				pkg=$(resolve "$meta")
				echo "$pkg" >"$CACHE/resolved-$label"
				dir=$CACHE/kernels/$pkg
				(cd "$CACHE/debs" && apt-get "${APT[@]}" download -qq "$pkg" >&2) ||
					die "cannot download $pkg"
			fi
			deb=$(ls "$CACHE/debs/${pkg}_"*.deb | tail -n 1)
		fi
		tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
		dpkg-deb -x "$deb" "$tmp"
		# /boot/vmlinuz-VERSION, or /usr/lib/modules/VERSION/vmlinuz (linux-binary-* of 7.x)
		z=$(ls "$tmp"/boot/vmlinuz-* "$tmp"/usr/lib/modules/*/vmlinuz 2>/dev/null | head -n 1)
		[ -n "$z" ] || { rm -rf "$tmp"; die "no vmlinuz in $deb"; }
		mkdir -p "$dir"
		python3 "$HERE/extract_vmlinux.py" "$z" "$dir/vmlinux" || { rm -rf "$tmp"; die "cannot extract vmlinux from $z"; }
		cp "$tmp"/boot/config-* "$dir/" 2>/dev/null || true
		rm -rf "$dir/modules"
		# 7.x packages hold the modules apart from the kernel, in linux-modules-RELEASE.
		if ! compgen -G "$tmp/lib/modules/*/kernel" >/dev/null &&
			! compgen -G "$tmp/usr/lib/modules/*/kernel" >/dev/null; then
			local mpkg=linux-modules-${pkg#linux-binary-} mdeb
			mdeb=$(ls "$CACHE/debs/${mpkg}_"*.deb 2>/dev/null | tail -n 1 || true)
			if [ -z "$mdeb" ]; then
				say "downloading $mpkg ($suite)"
				(cd "$CACHE/debs" && apt-get "${APT[@]}" download -qq "$mpkg" >&2) ||
					{ rm -rf "$tmp"; die "cannot download $mpkg"; }
				mdeb=$(ls "$CACHE/debs/${mpkg}_"*.deb | tail -n 1)
			fi
			dpkg-deb -x "$mdeb" "$tmp"
		fi
		python3 "$HERE/modules.py" "$tmp" "$dir/modules" $MODULES >&2 || { rm -rf "$tmp"; die "cannot take the modules ($MODULES) of $pkg"; }
		touch "$dir/modules.ok"
		rm -rf "$tmp"
	fi
	echo "$dir/vmlinux"
}

# ---- initramfs: busybox, the daemon, the generator, sqlite3 and its libraries, /init ----
make_initrd() {
	local s=$WORK/initramfs lib
	rm -rf "$s"
	mkdir -p "$s"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root}
	cp "$(command -v busybox)" "$s/bin/busybox"
	ln -s busybox "$s/bin/sh"
	cp "$DAEMON" "$s/bin/picosnitch"
	cp "$WORK/trafficgen" "$s/bin/trafficgen"
	cp "$WORK/bpfstat" "$s/bin/bpfstat"
	cp "$(command -v sqlite3)" "$s/bin/sqlite3"
	for lib in $(ldd "$(command -v sqlite3)" | grep -o '/[^ ]*'); do
		mkdir -p "$s$(dirname "$lib")"
		cp -L "$lib" "$s$lib"
	done
	# The modules of every kernel to boot, under /lib/modules/RELEASE with their load order.
	mkdir -p "$s/lib/modules"
	while read -r label vmlinux append; do
		cp -r "$(dirname "$vmlinux")"/modules/. "$s/lib/modules/"
	done <"$LOGS/kernels.txt"
	cp "$HERE/guest-init.sh" "$s/init"
	chmod 755 "$s/init"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$s/etc/passwd"
	echo 'root:x:0:' >"$s/etc/group"
	mknod -m 600 "$s/dev/console" c 5 1 2>/dev/null || true
	INITRD=$WORK/initrd.cpio
	(cd "$s" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) >"$INITRD"
}

# ---- 4. boot ----
qemu() { # vmlinux log append
	timeout "$TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -M pc -m "$MEM" -smp "$SMP" -nodefaults \
		-no-user-config -display none -serial stdio -no-reboot -kernel "$1" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 quiet $APPEND $3" </dev/null >"$2" 2>&1
}

boot() { # label vmlinux append
	local log=$LOGS/$1.log t0=$SECONDS rc=0 tries=1
	qemu "$2" "$log" "$3" || rc=$?
	# A kernel that dies before /init runs (seen once in a while under TCG: an oops in early
	# text patching) is booted once more; the first log is kept.
	if ! grep -q 'BOOTED kernel=' "$log"; then
		mv "$log" "$LOGS/$1.first-boot.log"
		say "kernel $1: no BOOTED line after $((SECONDS - t0)) s (see $1.first-boot.log); booting again"
		tries=2 rc=0
		qemu "$2" "$log" "$3" || rc=$?
	fi
	echo "VM label=$1 seconds=$((SECONDS - t0)) qemu_status=$rc boots=$tries" >>"$log"
	say "kernel $1: VM finished in $((SECONDS - t0)) s (qemu status $rc, boots $tries)"
}

check_tools
mkdir -p "$CACHE" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/summary.txt
# Downloads run while the daemon builds.
FETCH_LOG=$LOGS/fetch.txt
(
	while read -r label suite pkg append; do
		case " $WANT " in *" $label "*) ;; *) continue ;; esac
		vmlinux=$(fetch_kernel "$label" "$suite" "$pkg") || exit 2
		printf '%s %s %s\n' "$label" "$vmlinux" "$append"
	done <<<"$KERNEL_TABLE"
) >"$LOGS/kernels.txt" 2>"$FETCH_LOG" &
FETCH=$!
build
T_BUILD=$(($(date +%s) - START))
wait $FETCH || {
	cat "$FETCH_LOG" >&2
	die "fetching kernels failed"
}
cat "$FETCH_LOG" >&2
make_initrd
T_READY=$(($(date +%s) - START))
[ -s "$LOGS/kernels.txt" ] || die "no kernel selected (PICOSNITCH_VM_KERNELS=$WANT)"
say "build took $T_BUILD s, build and downloads $T_READY s; booting $(wc -l <"$LOGS/kernels.txt") kernels, $JOBS at a time"

running=0
while read -r label vmlinux append; do
	if [ "$running" -ge "$JOBS" ]; then
		wait -n || true
		running=$((running - 1))
	fi
	boot "$label" "$vmlinux" "$append" &
	running=$((running + 1))
done <"$LOGS/kernels.txt"
wait
status=0
python3 "$HERE/report.py" "$LOGS" $(awk '{print $1}' "$LOGS/kernels.txt") | tee "$LOGS/summary.txt" || status=$?
echo "total time: $(($(date +%s) - START)) s (build $T_BUILD s, build and downloads $T_READY s, VMs $(($(date +%s) - START - T_READY)) s)" |
	tee -a "$LOGS/summary.txt"
echo "serial logs: $LOGS"
exit $status
