# eval.nix: services.picosnitch evaluated by nixpkgs' module system with the NixOS options it sets stubbed (nixos-stubs.nix) and nixpkgs' own module of that name present, as on NixOS.
{ lib, pkgs }:
config:
(lib.evalModules {
  specialArgs.modulesPath = ./nixpkgs-modules;
  modules = [
    ./nixpkgs-modules/services/networking/picosnitch.nix
    ../../nixos-module
    ./nixos-stubs.nix
    { _module.args.pkgs = pkgs; }
    config
  ];
}).config
