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
    let status = Command::new(&clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
        ])
        .args(defines)
        .args(["-Wno-unused-function", "-I/usr/include/x86_64-linux-gnu"])
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
