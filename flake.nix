# flake.nix: picosnitch for Nix: the package, the NixOS module, an overlay, the OCI image, a development shell, and the checks (package, module evaluation, NixOS VM test).
{
  description = "picosnitch: the network traffic of every executable, counted with eBPF";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" ];
      forAll = f: lib.genAttrs systems (system: f (import nixpkgs {
        inherit system;
        overlays = [ self.overlays.default ];
      }));
    in
    {
      overlays.default = final: _prev: {
        picosnitch = final.callPackage ./nix/package.nix { };
      };

      packages = forAll (pkgs: {
        default = pkgs.picosnitch;
        picosnitch = pkgs.picosnitch;
        oci = pkgs.callPackage ./nix/oci.nix { };
      });

      # Takes services.picosnitch (and disables nixpkgs' module of that name, which runs the
      # Python program); the package defaults to this flake's.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.picosnitch.package =
            lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      # The module evaluated with nixpkgs' lib alone (no packages): what tests/nix/check.sh asks
      # for with --override-input nixpkgs path:…/nixpkgs-lib.
      lib.moduleTests = import ./tests/nix/module-eval.nix { inherit lib; };

      checks = forAll (pkgs: {
        package = pkgs.picosnitch;
        module = pkgs.runCommand "picosnitch-module-eval" { } ''
          echo ${lib.escapeShellArg (builtins.toJSON self.lib.moduleTests)} > $out
        '';
        nixos = import ./vm-tests/nixos.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
      });

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ pkgs.picosnitch ];
          packages = with pkgs; [
            clippy
            rustfmt
            sqlite
            qemu
            podman
            busybox
          ];
          CLANG = "${pkgs.llvmPackages.clang-unwrapped}/bin/clang";
          BPF_CFLAGS = "-I${lib.getDev pkgs.libbpf}/include";
        };
      });
    };
}
