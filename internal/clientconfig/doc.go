// Package clientconfig reads and writes the CLI's client configuration: the
// principal's certificate, key, trust bundle and API addresses in one 0600
// YAML file (`DIR/admin.yaml` from `unum init` and `unum admin recover`,
// $XDG_CONFIG_HOME/unum/config.yaml, by default ~/.config/unum/config.yaml,
// from `unum login`). Resolution order: --config, then UNUM_CONFIG, then the
// login default if that file exists; UNUM_ADDR overrides the addresses.
package clientconfig
