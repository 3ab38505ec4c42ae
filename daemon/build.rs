//! build.rs: compiles the eBPF C sources in daemon-ebpf/ with clang (CO-RE) into OUT_DIR.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let src_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../daemon-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("picosnitch.bpf.o");
    println!("cargo:rerun-if-changed={}", src_dir.display());
    for entry in std::fs::read_dir(&src_dir).expect("daemon-ebpf/ is readable") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("entry").path().display()
        );
    }
    // The plain object, and one with the twins of rescue.h (task storage: kernel >= 5.11).
    compile(&src_dir, &out, &[]);
    compile(
        &src_dir,
        &out.with_file_name("picosnitch-rescue.bpf.o"),
        &["-DPICOSNITCH_RESCUE"],
    );
}

fn compile(src_dir: &std::path::Path, out: &std::path::Path, defines: &[&str]) {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=BPF_CFLAGS");
    // Extra flags, e.g. the include directory of libbpf's headers where it is not /usr/include.
    let extra = env::var("BPF_CFLAGS").unwrap_or_default();
    let status = Command::new(&clang)
        .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{}", bpf_arch()))
        .args(defines)
        .arg("-Wno-unused-function")
        .args(extra.split_whitespace())
        .arg("-c")
        .arg(src_dir.join("picosnitch.bpf.c"))
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} (apt-get install clang libbpf-dev): {e}"));
    assert!(
        status.success(),
        "clang failed to compile the eBPF programs"
    );
}

/// The architecture name libbpf's bpf_tracing.h expects for the target being built.
fn bpf_arch() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("powerpc64") => "powerpc",
        Ok("s390x") => "s390",
        Ok("loongarch64") => "loongarch",
        Ok(other) => panic!("no eBPF target architecture known for {other}"),
        Err(_) => panic!("CARGO_CFG_TARGET_ARCH is not set"),
    }
}
