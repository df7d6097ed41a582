// Package core_test enforces the layering of STYLE.md rule 3: data flows one
// way, and the core depends on none of the packages built on it.
package core_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/commucat/commucat/"

type pkg struct {
	ImportPath string
	Deps       []string
	Imports    []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-json=ImportPath,Deps,Imports", "github.com/commucat/commucat/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestLayering(t *testing.T) {
	rules := []struct {
		from   string   // package path prefix, relative to the module
		forbid []string // dependency prefixes it must not have
	}{
		{"core/", []string{"transports/", "plugins/", "probes/", "backends/", "cmd/", "testnet/"}},
		{"core/transport", []string{module[:len(module)-1]}}, // the leaf: stdlib only
		{"plugins/sdk", []string{"core/router", "backends/", "cmd/"}},
		{"transports/", []string{"backends/", "cmd/", "plugins/", "probes/"}},
		{"backends/", []string{"cmd/", "transports/"}},
	}
	pkgs := listPackages(t)
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module)
		for _, r := range rules {
			if !strings.HasPrefix(rel, r.from) {
				continue
			}
			leaf := r.from == "core/transport" && rel == "core/transport"
			if r.from == "core/transport" && !leaf {
				continue
			}
			for _, d := range p.Deps {
				if leaf && strings.HasPrefix(d, module[:len(module)-1]) {
					t.Errorf("%s is the leaf contract but depends on %s", rel, d)
					continue
				}
				for _, f := range r.forbid {
					if !leaf && strings.HasPrefix(d, module+f) {
						t.Errorf("%s depends on %s (forbidden: %s*)", rel, d, f)
					}
				}
			}
		}
		if strings.Contains(rel, "test") { // test helper packages may import testing
			continue
		}
		for _, d := range p.Imports {
			if d == "testing" {
				t.Errorf("%s (production code) imports testing", rel)
			}
		}
	}
}
