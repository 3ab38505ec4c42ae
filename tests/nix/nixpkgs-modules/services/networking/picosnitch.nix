# picosnitch.nix: stands in for nixpkgs' own module of the same path (services.picosnitch.enable for the Python program), which the module must disable to take the name.
{ lib, ... }:
{
  options.services.picosnitch.enable = lib.mkEnableOption "the Python picosnitch";
}
