// Package builtin holds unum's shipped policy bundle: the Rego that
// `unum init` stores as policy revision 1, its tests and its data.
package builtin

import "embed"

// FS is the shipped bundle: authz.rego, network.rego, their tests and
// data.json.
//
//go:embed *.rego data.json
var FS embed.FS
