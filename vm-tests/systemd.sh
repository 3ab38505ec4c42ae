#!/usr/bin/env bash
# systemd.sh: picosnitch's units under a real systemd: boots a Debian root filesystem (systemd as PID 1) under QEMU with a kernel of the matrix and collects the checks of systemd-guest.sh.
#
# Usage: vm-tests/systemd.sh        (as root; prints one line per check and the times taken)
# Environment:
#   PICOSNITCH_VM_CACHE    the kernels vm-tests/run.sh downloads and the root filesystem
#                          (default /var/cache/picosnitch-vm)
#   PICOSNITCH_VM_LOGS     serial logs and the summary (default $CARGO_TARGET_DIR/vm-tests/systemd
#                          or target/vm-tests/systemd)
#   PICOSNITCH_VM_KERNEL   label in run.sh's kernel table whose kernel boots (default 6.12)
#   PICOSNITCH_VM_TIMEOUT  seconds for the VM (default 480)
#   PICOSNITCH_VM_SMP / _MEM / _ACCEL  per VM (2 / 2048 / tcg,thread=multi)
#   PICOSNITCH_VM_NO_BUILD=1   reuse the binaries of the last build (only missing ones are built)
#   PICOSNITCH_VM_DAEMON=FILE  boot this statically linked picosnitch instead of the one built here
#
# The root filesystem is `debootstrap --variant=minbase` with the packages of ROOTFS_INCLUDE, kept
# in $PICOSNITCH_VM_CACHE/rootfs-SUITE and as one cpio archive beside it; a stamp holds what it
# was made from (suite, packages, the customize_rootfs function), and it is made again when that
# changes. Each run appends a small archive (the daemon, the generator, the guest test and its
# unit) to a copy of that archive: the kernel unpacks both into its initial root filesystem and
# starts systemd from it (no /etc/initrd-release: systemd runs the full system, not an initrd).
set -euo pipefail
START=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CACHE=${PICOSNITCH_VM_CACHE:-/var/cache/picosnitch-vm}
LOGS=${PICOSNITCH_VM_LOGS:-$TARGET/vm-tests/systemd}
KLABEL=${PICOSNITCH_VM_KERNEL:-6.12}
TIMEOUT=${PICOSNITCH_VM_TIMEOUT:-480}
SMP=${PICOSNITCH_VM_SMP:-2}
MEM=${PICOSNITCH_VM_MEM:-2048}
ACCEL=${PICOSNITCH_VM_ACCEL:-tcg,thread=multi}
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
ROOTFS_INCLUDE=systemd,systemd-sysv,dbus,iproute2,python3,sqlite3
ROOTFS=$CACHE/rootfs-$SUITE
WORK=$LOGS/work
# The checks systemd-guest.sh reports, in its order; one missing is a failure.
CHECKS='units db-running journal status reload bad-config socket-activation api-tcp stop-write'

# shellcheck source=vm-tests/common.sh
. "$HERE/common.sh"

# ---- 1. tools ----

check_tools() {
	local missing=() t
	for t in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio gcc:gcc \
		cargo:cargo timeout:coreutils sha256sum:coreutils ldd:libc-bin; do
		command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
	done
	[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
	[ ${#missing[@]} -eq 0 ] || die "missing tools; install the Debian packages: ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "run as root (debootstrap, and the cache is under $CACHE)"
}

# ---- 2. the kernel: the one vm-tests/run.sh downloaded for $KLABEL ----
# run.sh records the package a label resolved to in $CACHE/resolved-LABEL and keeps its
# uncompressed kernel in $CACHE/kernels/PACKAGE/vmlinux.
cached_kernel() {
	local pkg
	pkg=$(cat "$CACHE/resolved-$KLABEL" 2>/dev/null || true)
	[ -n "$pkg" ] && [ -s "$CACHE/kernels/$pkg/vmlinux" ] && echo "$CACHE/kernels/$pkg/vmlinux"
}

find_kernel() {
	VMLINUX=$(cached_kernel) && return 0
	say "no kernel for label $KLABEL in $CACHE: running vm-tests/run.sh for that kernel to download it"
	local rc=0
	PICOSNITCH_VM_KERNELS=$KLABEL PICOSNITCH_VM_CACHE=$CACHE PICOSNITCH_VM_LOGS=$LOGS/matrix \
		"$HERE/run.sh" >&2 || rc=$?
	VMLINUX=$(cached_kernel) || die "run.sh (status $rc) left no kernel for label $KLABEL in $CACHE"
	[ "$rc" = 0 ] || say "run.sh's own checks failed (status $rc, logs in $LOGS/matrix); its kernel is used here"
}

# ---- 3. static binaries ----
build() {
	mkdir -p "$WORK"
	DAEMON=${PICOSNITCH_VM_DAEMON:-$TARGET/x86_64-unknown-linux-gnu/release/picosnitch}
	TRAFFICGEN=$WORK/trafficgen
	# PICOSNITCH_VM_NO_BUILD=1 reuses what is there and builds only what is missing.
	local again=1
	[ "${PICOSNITCH_VM_NO_BUILD:-}" != 1 ] || again=0
	if [ -z "${PICOSNITCH_VM_DAEMON:-}" ] && { [ $again = 1 ] || [ ! -x "$DAEMON" ]; }; then
		say "building the static daemon (cargo build --release --target x86_64-unknown-linux-gnu)"
		(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
			cargo build --release --target x86_64-unknown-linux-gnu --bin picosnitch --quiet)
	fi
	if [ $again = 1 ] || [ ! -x "$TRAFFICGEN" ]; then
		gcc -O2 -static -Wall -Werror -o "$TRAFFICGEN" "$ROOT"/tests/trafficgen/*.c
	fi
	local f
	for f in "$DAEMON" "$TRAFFICGEN"; do
		[ -x "$f" ] || die "$f was not built"
		is_static "$f" || die "$f is not statically linked"
	done
}

# ---- 4. the root filesystem ----
# What the cached tree gets after debootstrap: no documentation, manual pages, translations or
# package lists (the VM installs nothing), a host name, and no login prompts or periodic jobs
# (the VM runs one test and powers off). Part of the stamp: editing it rebuilds the cache.
customize_rootfs() { # dir
	local d=$1 u
	rm -rf "$d"/usr/share/doc/* "$d"/usr/share/man/* "$d"/usr/share/info/* "$d"/usr/share/locale/* \
		"$d"/var/cache/apt/*.bin "$d"/var/cache/apt/archives/*.deb "$d"/var/lib/apt/lists/*_*
	echo picosnitch-vm >"$d/etc/hostname"
	for u in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer \
		apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service \
		fstrim.timer systemd-pstore.service; do
		ln -sfn /dev/null "$d/etc/systemd/system/$u"
	done
}

rootfs_stamp() {
	{
		echo "debootstrap --variant=minbase --include=$ROOTFS_INCLUDE $SUITE $MIRROR"
		declare -f customize_rootfs
	} | sha256sum | cut -d' ' -f1
}

# Unmounts whatever a failed debootstrap left mounted below a directory, then removes it; refuses
# when something stays mounted (rm -rf must never reach into /proc, /sys or a bound /dev).
remove_tree() { # dir
	local d=$1
	[ -e "$d" ] || return 0
	awk -v d="$d/" 'index($2 "/", d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	if awk -v d="$d/" 'index($2 "/", d) == 1 {found = 1} END {exit !found}' /proc/mounts; then
		die "$d still has mounts below it; not removing it"
	fi
	rm -rf "$d"
}

make_rootfs() {
	local want tmp t0=$SECONDS
	want=$(rootfs_stamp)
	T_ROOTFS=cached
	if [ "$(cat "$ROOTFS.stamp" 2>/dev/null)" = "$want" ] && [ -d "$ROOTFS" ] && [ -s "$ROOTFS.cpio" ]; then
		return 0
	fi
	say "building the root filesystem: debootstrap --variant=minbase --include=$ROOTFS_INCLUDE $SUITE"
	tmp=$ROOTFS.new
	remove_tree "$tmp"
	rm -f "$ROOTFS.stamp"
	if ! debootstrap --variant=minbase --include="$ROOTFS_INCLUDE" "$SUITE" "$tmp" "$MIRROR" \
		>"$LOGS/debootstrap.log" 2>&1; then
		tail -n 20 "$LOGS/debootstrap.log" >&2
		remove_tree "$tmp"
		die "debootstrap failed (log: $LOGS/debootstrap.log)"
	fi
	customize_rootfs "$tmp"
	[ -x "$tmp/lib/systemd/systemd" ] || die "no /lib/systemd/systemd in the new root filesystem"
	[ ! -e "$tmp/etc/initrd-release" ] || die "the root filesystem has /etc/initrd-release (systemd would run as an initrd)"
	# Owners as they are (the archive is unpacked by the kernel as root).
	(cd "$tmp" && find . -mindepth 1 -print0 | cpio --null -o -H newc --quiet) >"$ROOTFS.cpio.new"
	remove_tree "$ROOTFS"
	mv "$tmp" "$ROOTFS"
	mv "$ROOTFS.cpio.new" "$ROOTFS.cpio"
	echo "$want" >"$ROOTFS.stamp"
	T_ROOTFS="built in $((SECONDS - t0)) s"
}

# ---- 5. this run's layer: the files a user would have downloaded, and the test's unit ----
make_initrd() {
	local l=$WORK/layer
	# The guest gives up a minute before the host does, so that its output is complete.
	GUEST_TIMEOUT=$((TIMEOUT > 120 ? TIMEOUT - 60 : TIMEOUT / 2))
	rm -rf "$l"
	mkdir -p "$l/opt/picosnitch-vm" "$l/etc/systemd/system/multi-user.target.wants"
	cp "$DAEMON" "$l/opt/picosnitch-vm/picosnitch"
	cp "$TRAFFICGEN" "$l/opt/picosnitch-vm/trafficgen"
	cp "$HERE/systemd-guest.sh" "$HERE/systemd-guest.py" "$l/opt/picosnitch-vm/"
	chmod 755 "$l/opt/picosnitch-vm/"*
	# Powers the VM off when the test ends, whatever its outcome; its output goes to the second
	# serial port, apart from the console's kernel and systemd messages.
	cat >"$l/etc/systemd/system/picosnitch-vm-test.service" <<EOF
[Unit]
Description=picosnitch VM test: the units under systemd
After=multi-user.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/opt/picosnitch-vm/systemd-guest.sh
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS1
TimeoutStartSec=$GUEST_TIMEOUT

[Install]
WantedBy=multi-user.target
EOF
	ln -s ../picosnitch-vm-test.service "$l/etc/systemd/system/multi-user.target.wants/"
	INITRD=$WORK/initrd.cpio
	cp "$ROOTFS.cpio" "$INITRD"
	(cd "$l" && find . -mindepth 1 -print0 | cpio --null -o -H newc -R 0:0 --quiet) >>"$INITRD"
}

# ---- 6. boot ----
qemu() {
	rm -f "$CONSOLE" "$RESULTS"
	timeout "$TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -M pc -m "$MEM" -smp "$SMP" -nodefaults \
		-no-user-config -display none -no-reboot -kernel "$VMLINUX" -initrd "$INITRD" \
		-serial "file:$CONSOLE" -serial "file:$RESULTS" \
		-append "console=ttyS0 rdinit=/sbin/init panic=-1 quiet" \
		</dev/null >>"$LOGS/qemu.log" 2>&1
}

boot() {
	CONSOLE=$LOGS/console.log
	RESULTS=$LOGS/results.log
	rm -f "$LOGS/qemu.log" "$LOGS"/*.first-boot.log
	local t0=$SECONDS
	QEMU_RC=0 BOOTS=1
	qemu || QEMU_RC=$?
	# A kernel that dies before the test starts (seen once in a while under TCG, see run.sh) is
	# booted once more; the first logs are kept.
	if ! grep -q '^BOOTED ' "$RESULTS" 2>/dev/null; then
		mv "$CONSOLE" "$LOGS/console.first-boot.log" 2>/dev/null || true
		mv "$RESULTS" "$LOGS/results.first-boot.log" 2>/dev/null || true
		say "the test did not start within $((SECONDS - t0)) s (qemu status $QEMU_RC; see $LOGS/console.first-boot.log); booting again"
		QEMU_RC=0 BOOTS=2
		qemu || QEMU_RC=$?
	fi
	T_VM=$((SECONDS - t0))
	[ "$QEMU_RC" != 124 ] || say "the VM did not power off within $TIMEOUT s"
}

# ---- 7. results ----
report() {
	local out=$LOGS/summary.txt status=0 c line verdict detail booted done_line b d
	tr -d '\r' <"$RESULTS" >"$RESULTS.txt" 2>/dev/null || : >"$RESULTS.txt"
	booted=$(grep -m1 '^BOOTED ' "$RESULTS.txt" || true)
	done_line=$(grep -m1 '^DONE ' "$RESULTS.txt" || true)
	{
		printf '%-18s %-6s %s\n' check result detail
		for c in $CHECKS; do
			line=$(grep -m1 "^RESULT $c " "$RESULTS.txt" || true)
			if [ -z "$line" ]; then
				verdict=FAIL detail="not reported by the guest"
			else
				read -r _ _ verdict detail <<<"$line"
			fi
			[ "$verdict" = PASS ] || status=1
			printf '%-18s %-6s %s\n' "$c" "$verdict" "$detail"
		done
		# A check this list does not know is a failure too (the two lists must agree).
		while read -r _ c verdict detail; do
			case " $CHECKS " in
			*" $c "*) ;;
			*)
				printf '%-18s %-6s %s\n' "$c" FAIL "not in this script's list ($verdict $detail)"
				status=1
				;;
			esac
		done < <(grep '^RESULT ' "$RESULTS.txt" || true)
		if [ -z "$done_line" ]; then
			echo "the guest did not finish (no DONE line; qemu status $QEMU_RC)"
			grep '^ERROR ' "$RESULTS.txt" || true
			status=1
		fi
		if [ "$QEMU_RC" != 0 ]; then
			echo "qemu exited with status $QEMU_RC (log: $LOGS/qemu.log)"
			status=1
		fi
		echo "${booted:-no BOOTED line}"
		echo "${done_line:-no DONE line}"
		# The guest's times: uptime when the test started and when it ended.
		b=$(sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' <<<"$booted")
		d=$(sed -n 's/.* uptime=\([0-9.]*\).*/\1/p' <<<"$done_line")
		echo "time: total $(($(date +%s) - START)) s; root filesystem $T_ROOTFS; build $T_BUILD s;" \
			"VM $T_VM s (boots: $BOOTS): kernel and systemd until the test ${b:-?} s, tests $(awk -v b="$b" -v d="$d" \
				'BEGIN {if (b == "" || d == "") print "?"; else printf "%.1f", d - b}') s, then poweroff"
		echo "logs: $CONSOLE (console), $RESULTS.txt (test output)"
		[ "$status" = 0 ] && echo "systemd VM test: every check passed" || echo "systemd VM test: FAILED"
	} >"$out"
	cat "$out"
	return $status
}

check_tools
for f in systemd-guest.sh systemd-guest.py; do
	[ -r "$HERE/$f" ] || die "$HERE/$f is missing"
done
mkdir -p "$CACHE" "$LOGS"
find_kernel
t=$(date +%s)
build
T_BUILD=$(($(date +%s) - t))
make_rootfs
make_initrd
say "booting $VMLINUX with systemd ($SMP CPUs, $MEM MB, $ACCEL; at most $TIMEOUT s)"
boot
report
