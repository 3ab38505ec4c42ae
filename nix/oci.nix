# oci.nix: the OCI image of the privileged host-PID sidecar (oci/README.md), built by dockerTools from the Nix package.
{
  dockerTools,
  picosnitch,
}:
dockerTools.buildLayeredImage {
  name = "picosnitch";
  tag = picosnitch.version;
  contents = [ picosnitch ];
  extraCommands = ''
    mkdir -p etc/picosnitch var/lib/picosnitch var/log/picosnitch run/picosnitch tmp
    chmod 1777 tmp
    cp ${../oci/config.toml} etc/picosnitch/config.toml
  '';
  config = {
    Entrypoint = [
      "${picosnitch}/bin/picosnitch"
      "start-no-daemon"
      "--config"
      "/etc/picosnitch/config.toml"
    ];
    Volumes."/var/lib/picosnitch" = { };
    ExposedPorts."5100/tcp" = { };
    StopSignal = "SIGTERM";
  };
}
