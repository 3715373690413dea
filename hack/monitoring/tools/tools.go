//go:build tools

// Package tools pins promtool's version in this module's go.mod and go.sum,
// so build.sh can build it with -mod=readonly.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
