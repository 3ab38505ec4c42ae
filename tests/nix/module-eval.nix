# module-eval.nix: services.picosnitch evaluated for real by nixpkgs' module system (lib only): the units it installs, the rendered settings (round trip through builtins.fromTOML), and that bad values and typos are evaluation errors. Evaluates to a summary; a failed check throws naming it.
{
  lib,
  pkgs ? import ./pkgs-shim.nix { },
}:
let
  toml = import ../../nixos-module/toml.nix { inherit lib; };

  eval = import ./eval.nix { inherit lib pkgs; };

  # Forces the whole configuration the module produces (a type error is thrown only when read).
  fails = config: !(builtins.tryEval (builtins.deepSeq (eval config).services.picosnitch (eval config).systemd)).success;

  check =
    name: ok:
    if ok then true else throw "module-eval: ${name}";

  stripNulls =
    v:
    if builtins.isAttrs v then
      lib.mapAttrs (_: stripNulls) (lib.filterAttrs (_: x: x != null) v)
    else if builtins.isList v then
      map stripNulls v
    else
      v;

  roundTrip =
    settings:
    let
      back = builtins.fromTOML (builtins.unsafeDiscardStringContext (toml.render settings));
    in
    check "fromTOML (render settings) == settings: ${builtins.toJSON back}" (back == stripNulls settings);

  plain = eval { services.picosnitch.enable = true; };
  p = plain.services.picosnitch;

  custom = eval {
    services.picosnitch = {
      enable = true;
      openFirewall = true;
      settings = {
        database.retention_days = 365;
        database.remote = {
          client = "postgresql";
          host = "db.example.org";
        };
        log.ignore_ports = [ 53 5353 ];
        log.ignore_domains = [ "example.com" "quote\"and\\backslash" ];
        api.listen = "0.0.0.0:5200";
        desktop.notifications = false;
        monitoring.hook_set = "tp_btf";
        geoip.databases = [ ];
        dns."quoted key é" = [ { a = 1; } { a = 2; } ];
      };
    };
  };
  c = custom.services.picosnitch;

  off = eval { services.picosnitch.enable = false; };
  noSockets = eval {
    services.picosnitch.enable = true;
    services.picosnitch.settings.api = {
      listen = "";
      socket = false;
    };
  };
  firewallWithoutTcp = eval {
    services.picosnitch = {
      enable = true;
      openFirewall = true;
      settings.api.listen = "";
    };
  };
  failedAssertions = cfg: builtins.filter (a: !a.assertion) cfg.assertions;

  results = {
    units = check "the units come from picosnitch systemd" (
      map (d: d.name) plain.systemd.packages == [ "picosnitch-units" ]
      && lib.hasInfix "picosnitch systemd --config" (builtins.elemAt plain.systemd.packages 0).script
      && lib.hasInfix "--unit-dir" (builtins.elemAt plain.systemd.packages 0).script
    );
    service = check "the service is wanted and restarts with its config" (
      plain.systemd.services.picosnitch.wantedBy == [ "multi-user.target" ]
      && plain.systemd.services.picosnitch.restartTriggers == [ p.configFile ]
    );
    socket = check "the socket is wanted when the API listens" (
      plain.systemd.sockets.picosnitch.wantedBy == [ "sockets.target" ]
      && !(noSockets.systemd.sockets ? picosnitch)
    );
    checkedAtBuild = check "the config file is built by check-config --strict" (
      p.configFile.name == "picosnitch-config.toml"
      && lib.hasInfix "check-config --strict" p.configFile.script
      && plain.environment.etc."picosnitch/config.toml".source == p.configFile
    );
    group = check "the picosnitch group reads the history" (
      plain.users.groups ? picosnitch && p.settings.data.group == "picosnitch"
    );
    geoipDefault = check "GeoIP defaults to DB-IP lite" (
      map baseNameOf p.settings.geoip.databases == [
        "dbip-country-lite.mmdb"
        "dbip-asn-lite.mmdb"
      ]
    );
    firewallClosed = check "the firewall stays closed by default" (
      plain.networking.firewall.allowedTCPPorts == [ ]
    );
    firewallOpen = check "openFirewall opens the API port" (
      custom.networking.firewall.allowedTCPPorts == [ 5200 ]
    );
    firewallNeedsTcp = check "openFirewall without TCP fails an assertion" (
      builtins.length (failedAssertions firewallWithoutTcp) == 1 && failedAssertions plain == [ ]
    );
    disabled = check "nothing is set when disabled" (
      off.systemd.packages == [ ] && off.systemd.services == { } && off.users.groups == { }
    );
    takesTheName = check "nixpkgs' own services.picosnitch is disabled" (p.enable && p ? package);
    renderedPlain = roundTrip p.settings;
    renderedCustom = roundTrip c.settings;
    renderedIsTheFile = check "the file holds the rendered settings" (
      c.configFile.text == toml.render c.settings
      && lib.hasInfix "[database.remote]" c.configFile.text
      && lib.hasInfix "retention_days = 365" c.configFile.text
    );
    freeformSurvives = check "keys without an option are kept" (
      (builtins.fromTOML (builtins.unsafeDiscardStringContext c.configFile.text)).monitoring.hook_set == "tp_btf"
    );
    badListen = check "a non-string listen address is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.api.listen = 5100;
    });
    badListenForm = check "a listen address without a port is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.api.listen = "localhost";
    });
    badPort = check "a port out of range is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.log.ignore_ports = [ 70000 ];
    });
    badHash = check "a sha256 that is not 64 hex digits is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.log.ignore_sha256 = [ "abc" ];
    });
    badRetention = check "negative retention is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.database.retention_days = -1;
    });
    typoSection = check "a misspelt section is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.databse.retention_days = 7;
    });
    typoOption = check "a misspelt option is an error" (fails {
      services.picosnitch.enabel = true;
    });
    badValueType = check "a value TOML cannot hold is an error" (fails {
      services.picosnitch.enable = true;
      services.picosnitch.settings.monitoring.every_exe = x: x;
    });
  };
in
assert builtins.all (x: x) (builtins.attrValues results);
builtins.attrNames results
