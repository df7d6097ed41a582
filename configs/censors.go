package configs

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// censorFiles are the shipped testnet censor profiles, one YAML file per
// profile (see testnet/censor.ParseProfile for the schema). Each file's
// comments cite the measurement it follows.
//
//go:embed censors/*.yaml
var censorFiles embed.FS

// ErrUnknownCensorProfile is returned for a censor profile name that is
// not shipped.
var ErrUnknownCensorProfile = errors.New("config: unknown censor profile")

// CensorProfileNames returns the names of the shipped censor profiles
// (their file names without .yaml), sorted.
func CensorProfileNames() []string {
	entries, err := fs.ReadDir(censorFiles, "censors")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".yaml"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// CensorProfileYAML returns the shipped censor profile called name.
func CensorProfileYAML(name string) ([]byte, error) {
	if !slices.Contains(CensorProfileNames(), name) {
		return nil, fmt.Errorf("%w %q (have %s)", ErrUnknownCensorProfile, name, strings.Join(CensorProfileNames(), ", "))
	}
	b, err := censorFiles.ReadFile(path.Join("censors", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("config: censor profile %s: %w", name, err)
	}
	return bytes.Clone(b), nil
}
