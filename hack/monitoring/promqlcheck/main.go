// Command promqlcheck parses PromQL expressions with Prometheus' own parser.
//
// It reads a JSON list of expressions on stdin and writes one JSON object per
// expression on stdout: the expression, the parse error if any, and the metric
// names and label names it uses (selectors, matchers, by/without, on/ignoring),
// so the chart tests can check them against the series the code exports. The
// exit code is 1 if any expression did not parse.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Error   string   `json:"error,omitempty"`
	Metrics []string `json:"metrics"`
	Labels  []string `json:"labels"`
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func check(p parser.Parser, input string) result {
	r := result{Expr: input, Metrics: []string{}, Labels: []string{}}
	expr, err := p.ParseExpr(input)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	metrics, names := map[string]bool{}, map[string]bool{}
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			if n.Name != "" {
				metrics[n.Name] = true
			}
			for _, m := range n.LabelMatchers {
				if m.Name != labels.MetricName {
					names[m.Name] = true
				}
			}
		case *parser.AggregateExpr:
			for _, l := range n.Grouping {
				names[l] = true
			}
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				for _, l := range n.VectorMatching.MatchingLabels {
					names[l] = true
				}
			}
		}
		return nil
	})
	r.Metrics, r.Labels = sorted(metrics), sorted(names)
	return r
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promqlcheck: stdin must be a JSON list of strings:", err)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	out := json.NewEncoder(os.Stdout)
	bad := 0
	for _, e := range exprs {
		r := check(p, e)
		if r.Error != "" {
			bad++
		}
		if err := out.Encode(r); err != nil {
			os.Exit(2)
		}
	}
	if bad > 0 {
		os.Exit(1)
	}
}
