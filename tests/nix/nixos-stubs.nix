# nixos-stubs.nix: the NixOS options services.picosnitch sets, declared loosely so that the module can be evaluated with nixpkgs' lib alone; each keeps what the module defines for the assertions of module-eval.nix.
{ lib, ... }:
let
  loose = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  list = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
in
{
  options = {
    assertions = list;
    environment.etc = loose;
    environment.systemPackages = list;
    users.groups = loose;
    systemd.packages = list;
    systemd.services = loose;
    systemd.sockets = loose;
    networking.firewall.allowedTCPPorts = list;
  };
}
