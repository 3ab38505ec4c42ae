# pkgs-shim.nix: the few nixpkgs functions the NixOS module calls, as builtins-only derivations that build in Nix's sandbox with busybox as /bin/sh (full nixpkgs cannot be fetched everywhere the tests run); `bin` is the static picosnitch binary.
{
  bin ? null,
  system ? "x86_64-linux",
}:
let
  run =
    name: env: script:
    derivation (
      env
      // {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          script
        ];
        PATH = "/bin";
      }
    );
  # A data package that has no content here: evaluated, never built.
  placeholder = name: run name { } "echo '${name} is not available in this test' >&2; exit 1";
in
{
  runCommand =
    name: env: script:
    run name env ("set -e\n" + script) // { inherit script; };
  picosnitch =
    if bin == null then
      placeholder "picosnitch"
    else
      run "picosnitch" { } "mkdir -p $out/bin && cp ${bin} $out/bin/picosnitch && chmod 0555 $out/bin/picosnitch";
  dbip-country-lite = placeholder "dbip-country-lite";
  dbip-asn-lite = placeholder "dbip-asn-lite";
}
