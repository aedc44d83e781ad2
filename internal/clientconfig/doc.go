// Package clientconfig reads and writes the CLI's client configuration: the
// principal's certificate, key, trust bundle and API addresses in one 0600
// YAML file (`DIR/admin.yaml` from `unum init`, later
// ~/.config/unum/config.yaml from `unum login`). Resolution order: --config,
// then UNUM_CONFIG; UNUM_ADDR overrides the addresses.
package clientconfig
