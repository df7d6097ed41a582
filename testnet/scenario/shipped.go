package scenario

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// shippedFiles are the scenarios shipped with the program, one YAML file
// each.
//
//go:embed scenarios/*.yaml
var shippedFiles embed.FS

// Names returns the names of the shipped scenarios, sorted.
func Names() []string {
	entries, err := fs.ReadDir(shippedFiles, "scenarios")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Shipped returns the shipped scenario called name, parsed.
func Shipped(name string) (*Scenario, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("scenario: no shipped scenario %q (have %s)", name, strings.Join(Names(), ", "))
	}
	b, err := shippedFiles.ReadFile("scenarios/" + name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s.yaml: %w", name, err)
	}
	return s, nil
}

// Standard returns the standard test network: two clients (alice and
// bob, inside), a gateway serving transports (all if empty), a cover
// website, a DNS resolver knowing the cover and the gateway, and the
// censor's prober; profile names a shipped censor profile ("" for none).
// Its Setup starts the gateway and registers both users; Run, Timeline
// and Expect are empty for the caller to fill in.
func Standard(name, profile string, transports ...string) *Scenario {
	s := &Scenario{
		Name: name,
		Hosts: []Host{
			{Name: "alice"},
			{Name: "bob"},
			{Name: "gateway", Role: RoleGateway},
			{Name: "cover", Role: RoleCover, Names: []string{DefaultCoverName}},
			{Name: "dns", Role: RoleResolver, Records: map[string]string{DefaultCoverName: "cover", "gateway.test": "gateway"}},
			{Name: "prober", Role: RoleProber},
		},
		Setup: []Program{
			{Gateway: &Gateway{Host: "gateway", Transports: slices.Clone(transports)}},
			{Register: &Register{Host: "alice", User: "alice"}},
			{Register: &Register{Host: "bob", User: "bob"}},
		},
	}
	if profile != "" {
		s.Censor = &Censor{Profile: profile}
	}
	return s
}
