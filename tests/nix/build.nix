# build.nix: the module's config file and units built for real in Nix's sandbox by the static daemon (check-config --strict, then picosnitch systemd --unit-dir); `bad` is a file the daemon refuses, which must not build.
{
  lib,
  bin,
}:
let
  pkgs = import ./pkgs-shim.nix { inherit bin; };
  eval = import ./eval.nix { inherit lib pkgs; };
  picosnitch =
    settings:
    let
      c = eval {
        services.picosnitch = {
          enable = true;
          inherit settings;
        };
      };
    in
    {
      inherit (c.services.picosnitch) configFile;
      units = builtins.head c.systemd.packages;
    };
  good = picosnitch {
    database.retention_days = 90;
    log.ignore_ports = [ 5353 ];
    api.listen = "127.0.0.1:5200";
    geoip.databases = [ ];
  };
in
{
  config = good.configFile;
  inherit (good) units;
  # A value of the right Nix type that the daemon refuses: the build fails, naming the key.
  bad =
    (picosnitch {
      log.ignore_ips = [ "192.168.1.0/33" ];
      geoip.databases = [ ];
    }).configFile;
  # A key the daemon does not know (within a section, where keys are free): --strict refuses it.
  unknown =
    (picosnitch {
      database.retension_days = 7;
      geoip.databases = [ ];
    }).configFile;
}
