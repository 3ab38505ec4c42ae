# package.nix: picosnitch built from this repository's Cargo.lock; the eBPF objects by an unwrapped clang (the wrapper's hardening flags do not apply to the bpf target), their BTF kept for CO-RE.
{
  lib,
  rustPlatform,
  llvmPackages,
  libbpf,
  installShellFiles,
}:
let
  workspace = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "picosnitch";
  inherit (workspace.workspace.package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../daemon
      ../daemon-ebpf
    ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [
    llvmPackages.clang-unwrapped
    installShellFiles
  ];
  env = {
    CLANG = "${llvmPackages.clang-unwrapped}/bin/clang";
    BPF_CFLAGS = "-I${lib.getDev libbpf}/include";
  };

  # Only the daemon's own binary; the integration tests load eBPF programs as root and run under
  # scripts/test, the unit tests here.
  cargoBuildFlags = [ "--bin" "picosnitch" ];
  cargoTestFlags = [ "--bins" ];

  postInstall = ''
    installShellCompletion --cmd picosnitch \
      --bash <($out/bin/picosnitch completions bash) \
      --zsh <($out/bin/picosnitch completions zsh) \
      --fish <($out/bin/picosnitch completions fish)
    $out/bin/picosnitch man > picosnitch.1
    installManPage picosnitch.1
  '';

  # Stripping the binary leaves the embedded objects alone; check that their BTF is there.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    grep -q '\.BTF\.ext' $out/bin/picosnitch
    $out/bin/picosnitch version
    runHook postInstallCheck
  '';

  meta = {
    description = "Network traffic of every executable, counted with eBPF";
    license = lib.licenses.gpl3Plus;
    platforms = lib.platforms.linux;
    mainProgram = "picosnitch";
  };
}
