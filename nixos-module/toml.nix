# toml.nix: the TOML value type of services.picosnitch.settings and its renderer (builtins and lib only; checked by a builtins.fromTOML round trip in tests/nix).
{ lib }:
let
  inherit (lib) types;

  isTable = v: builtins.isAttrs v && !(lib.isDerivation v);
  isTableList = v: builtins.isList v && v != [ ] && builtins.all isTable v;

  # A key as TOML writes it: bare when it can be, else a basic string.
  key = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else builtins.toJSON k;
  path = ks: lib.concatMapStringsSep "." key ks;

  # JSON's string escapes are all valid in a TOML basic string (Nix never writes "\/").
  scalar =
    v:
    if builtins.isBool v then
      lib.boolToString v
    else if builtins.isInt v then
      toString v
    else if builtins.isFloat v then
      builtins.toJSON v
    else if builtins.isString v || builtins.isPath v || lib.isDerivation v then
      builtins.toJSON "${v}"
    else if builtins.isList v then
      "[" + lib.concatMapStringsSep ", " scalar v + "]"
    else if isTable v then
      "{ "
      + lib.concatStringsSep ", " (
        lib.mapAttrsToList (k: x: "${key k} = ${scalar x}") (lib.filterAttrs (_: x: x != null) v)
      )
      + " }"
    else
      throw "picosnitch settings: a value of type ${builtins.typeOf v} has no TOML form";

  # The body of one table: its plain keys, then its sub-tables and arrays of tables.
  table =
    prefix: attrs:
    let
      set = lib.filterAttrs (_: v: v != null) attrs;
      plain = lib.filterAttrs (_: v: !(isTable v) && !(isTableList v)) set;
      tables = lib.filterAttrs (_: isTable) set;
      lists = lib.filterAttrs (_: isTableList) set;
      lines = lib.mapAttrsToList (k: v: "${key k} = ${scalar v}\n") plain;
      sub = lib.mapAttrsToList (
        k: v:
        let
          p = prefix ++ [ k ];
        in
        "\n[${path p}]\n" + table p v
      ) tables;
      arrays = lib.mapAttrsToList (
        k: vs:
        let
          p = prefix ++ [ k ];
        in
        lib.concatMapStrings (v: "\n[[${path p}]]\n" + table p v) vs
      ) lists;
    in
    lib.concatStrings (lines ++ sub ++ arrays);
in
{
  # Any value a TOML file can hold; null leaves the key out (the daemon's default applies).
  type =
    let
      value =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf value)
            (types.listOf value)
          ]
        )
        // {
          description = "TOML value";
        };
    in
    types.attrsOf value;

  render = settings: "# Written by the NixOS module services.picosnitch.\n" + table [ ] settings;
}
