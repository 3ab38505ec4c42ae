# nixos.nix: the NixOS VM test (pkgs.testers.runNixOSTest): a caddy server with a file of known size, a client with services.picosnitch.enable; curl's bytes, store path and sha256 in SQLite, the journal's new-program entry, and a new hash once the binary is replaced.
{ pkgs, module }:
let
  size = 1048576;
in
pkgs.testers.runNixOSTest {
  name = "picosnitch";

  nodes.server = {
    services.caddy = {
      enable = true;
      virtualHosts.":80".extraConfig = ''
        root * /srv
        file_server
      '';
    };
    systemd.tmpfiles.rules = [ "d /srv 0755 root root -" ];
    system.activationScripts.blob = "head -c ${toString size} /dev/urandom > /srv/blob";
    networking.firewall.allowedTCPPorts = [ 80 ];
  };

  nodes.client =
    { pkgs, ... }:
    {
      imports = [ module ];
      services.picosnitch = {
        enable = true;
        settings.database.write_limit_seconds = 1;
        settings.desktop.notifications = false;
      };
      environment.systemPackages = [
        pkgs.curl
        pkgs.sqlite
      ];
    };

  testScript = ''
    start_all()
    server.wait_for_unit("caddy.service")
    server.wait_for_open_port(80)
    client.wait_for_unit("picosnitch.service")

    curl = client.succeed("readlink -f $(command -v curl)").strip()
    digest = client.succeed(f"sha256sum {curl}").split()[0]
    client.succeed("curl -sf -o /dev/null http://server/blob")
    db = "/var/lib/picosnitch/picosnitch.db"
    query = (
        "SELECT coalesce(sum(c.recv), 0) FROM connections c JOIN executables e ON e.id = c.exe_id "
        f"WHERE e.exe = '{curl}' AND e.sha256 = '{digest}'"
    )
    client.wait_until_succeeds(
        f"test $(sqlite3 {db} \"{query}\") -ge ${toString size}", timeout=60
    )
    client.succeed(f"journalctl -u picosnitch -o verbose | grep -q 'SHA256={digest}'")

    # The same path, new content: a new hash.
    client.succeed(f"cp {curl} /tmp/curl && printf x >> /tmp/curl && chmod +x /tmp/curl")
    changed = client.succeed("sha256sum /tmp/curl").split()[0]
    client.succeed("/tmp/curl -sf -o /dev/null http://server/blob")
    client.wait_until_succeeds(
        f"sqlite3 {db} \"SELECT count(*) FROM executables WHERE sha256 = '{changed}'\" | grep -qx 1",
        timeout=60,
    )
  '';
}
