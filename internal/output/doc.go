// Package output owns how every unum command prints results: the -o flag's
// formats (table, json, yaml) and their conventions.
//
//   - json: indented two spaces, one trailing newline, HTML characters not
//     escaped. Field order is the struct's, so commands print structs with
//     json tags (snake_case), not maps.
//   - yaml: sigs.k8s.io/yaml, which goes through the json tags, so the keys
//     are the JSON keys; it sorts them alphabetically.
//   - table: text/tabwriter with two spaces between columns; the command
//     supplies the rows (header in UPPER CASE, as kubectl and nomad do).
//
// Write is deterministic: the same value prints the same bytes. Only cmd/
// packages should need it.
package output
