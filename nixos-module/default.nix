# default.nix: the NixOS module services.picosnitch: options, the one config file (rendered, then checked by the daemon itself at build time), the units `picosnitch systemd` writes, the read-access group.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.picosnitch;
  toml = import ./toml.nix { inherit lib; };
  inherit (lib) mkOption types;

  # A section of the config: typed options for the common keys, any other TOML key allowed (the
  # build-time check with --strict refuses keys the daemon does not know).
  section =
    description: options:
    mkOption {
      inherit description;
      default = { };
      type = types.submodule {
        freeformType = toml.type;
        inherit options;
      };
    };

  # A key picosnitch gives a default to: null leaves it out of the file.
  key =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      inherit description;
    };

  # The daemon reads this file; it is only built when the daemon accepts it.
  configFile =
    pkgs.runCommand "picosnitch-config.toml"
      {
        text = toml.render cfg.settings;
        passAsFile = [ "text" ];
      }
      ''
        ${cfg.package}/bin/picosnitch check-config --strict "$textPath"
        cp "$textPath" "$out"
      '';

  # picosnitch.service and picosnitch.socket exactly as `picosnitch systemd` writes them for this
  # file: the hardening has one source, the daemon.
  units = pkgs.runCommand "picosnitch-units" { } ''
    ${cfg.package}/bin/picosnitch systemd --config ${configFile} --unit-dir "$out/lib/systemd/system"
  '';

  listen = cfg.settings.api.listen;
  sockets = listen != "" || cfg.settings.api.socket;
  port = lib.toInt (lib.last (lib.splitString ":" listen));
in
{
  # nixpkgs' own services.picosnitch runs the Python program; this module takes the name.
  disabledModules = [ "services/networking/picosnitch.nix" ];

  options.services.picosnitch = {
    enable = lib.mkEnableOption "picosnitch, which counts the network traffic of every executable with eBPF";

    package = lib.mkPackageOption pkgs "picosnitch" { };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `settings.api.listen` (the read-only API and dashboard) in the firewall.";
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = configFile;
      defaultText = lib.literalMD "`settings` rendered to TOML and checked by `picosnitch check-config --strict`";
      description = "The configuration file the service runs with (also /etc/picosnitch/config.toml).";
    };

    settings = mkOption {
      description = ''
        The daemon's configuration (its README's "Configuration"), rendered to TOML and passed with
        `--config`. Keys left null or unset take the daemon's defaults.
      '';
      default = { };
      type = types.submodule {
        options = {
          database = section "Storage: retention and the write window." {
            retention_days = key types.ints.unsigned "Days of history kept; 0 keeps everything.";
            write_limit_seconds = key types.ints.positive "Length of a write window in seconds.";
          };
          data = section "Owner, group and mode of the database and logs." {
            group = mkOption {
              type = types.str;
              default = "picosnitch";
              description = "Group that may read the history and use the API's unix socket.";
            };
          };
          log = section "What is stored." {
            ignore_ports = key (types.listOf types.port) "Ports whose traffic is not stored.";
            ignore_domains = key (types.listOf types.str) "Domains (and their subdomains) not stored.";
            ignore_ips = key (types.listOf types.str) "Addresses or CIDR networks not stored.";
            ignore_sha256 = key (types.listOf (
              types.strMatching "[0-9a-f]{64}"
            )) "Executables, by sha256, not stored.";
          };
          monitoring = section "Kernel side." { };
          dns = section "DNS capture and reverse lookups." { };
          virustotal = section "VirusTotal lookups." { };
          desktop = section "Desktop notifications." {
            notifications = key types.bool "Notify every logged-in user's session of new and modified programs.";
          };
          api = section "The read-only API." {
            listen = mkOption {
              type = types.strMatching "(.*:[0-9]+)?";
              default = "127.0.0.1:5100";
              description = "TCP address of the API (`[::1]:5100` for IPv6); \"\" turns TCP off.";
            };
            socket = mkOption {
              type = types.bool;
              default = true;
              description = "Also serve the API on /run/picosnitch/api.sock (group `settings.data.group`).";
            };
          };
          geoip = section "GeoIP databases." {
            databases = mkOption {
              type = types.listOf (types.either types.path types.str);
              default = [
                "${pkgs.dbip-country-lite}/share/dbip/dbip-country-lite.mmdb"
                "${pkgs.dbip-asn-lite}/share/dbip/dbip-asn-lite.mmdb"
              ];
              defaultText = lib.literalExpression ''
                [ "''${pkgs.dbip-country-lite}/share/dbip/dbip-country-lite.mmdb"
                  "''${pkgs.dbip-asn-lite}/share/dbip/dbip-asn-lite.mmdb" ]'';
              description = "MaxMind-format databases, read in order; [] turns GeoIP off.";
            };
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !cfg.openFirewall || listen != "";
        message = "services.picosnitch.openFirewall needs settings.api.listen (it is \"\").";
      }
    ];

    environment.systemPackages = [ cfg.package ];
    # The CLI (query, status, dash) reads the same file by default.
    environment.etc."picosnitch/config.toml".source = configFile;

    users.groups.${cfg.settings.data.group} = { };

    systemd.packages = [ units ];
    systemd.services.picosnitch = {
      wantedBy = [ "multi-user.target" ];
      restartTriggers = [ configFile ];
    };
    systemd.sockets.picosnitch = lib.mkIf sockets { wantedBy = [ "sockets.target" ]; };

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ port ];
  };

}
