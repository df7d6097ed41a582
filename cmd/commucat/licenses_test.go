package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// licenseKinds recognises the licenses compatible with CommuCat's
// GPL-3.0-or-later, by a phrase from their text.
var licenseKinds = []struct {
	name string
	re   *regexp.Regexp
}{
	{"GPL-3.0", regexp.MustCompile(`GNU GENERAL PUBLIC LICENSE\s+Version 3`)},
	{"LGPL-3.0", regexp.MustCompile(`(?i)LGPLv3|GNU LESSER GENERAL PUBLIC LICENSE\s+Version 3`)},
	{"MPL-2.0", regexp.MustCompile(`Mozilla Public License,? (v\. |version )?2\.0`)},
	{"Apache-2.0", regexp.MustCompile(`Apache License,?\s+Version 2\.0`)},
	{"MIT", regexp.MustCompile(`Permission is hereby granted, free of charge`)},
	{"BSD", regexp.MustCompile(`Redistribution and use in source and binary forms`)},
	{"ISC", regexp.MustCompile(`Permission to use, copy, modify, and(/or)? distribute this software for any`)},
	{"CC0", regexp.MustCompile(`CC0 1\.0 Universal`)},
	// FreeType-Go: the user's choice of the FreeType License or the GPL,
	// version 2 or later; CommuCat takes the GPL.
	{"FTL or GPL-2.0-or-later", regexp.MustCompile(`The GNU General Public License \(GPL\), version 2 or later`)},
	// The FSF lists CC BY 4.0 as compatible with GPLv3.
	{"CC-BY-4.0", regexp.MustCompile(`Creative Commons Attribution 4\.0 International`)},
}

// TestDependencyLicenses checks that every module compiled into CommuCat
// carries a license compatible with GPL-3.0-or-later.
func TestDependencyLicenses(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-deps", "-f", "{{with .Module}}{{.Path}} {{.Dir}}{{end}}", "github.com/commucat/commucat/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		path, dir, ok := strings.Cut(sc.Text(), " ")
		if !ok || seen[path] || strings.HasPrefix(path, "github.com/commucat/commucat") {
			continue
		}
		seen[path] = true
		kind := detectLicense(dir)
		if kind == "" {
			t.Errorf("%s: no license recognised as compatible with GPL-3.0-or-later in %s", path, dir)
			continue
		}
		t.Logf("%-50s %s", path, kind)
	}
	if len(seen) == 0 {
		t.Fatal("no dependencies listed")
	}
}

func detectLicense(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		n := strings.ToUpper(e.Name())
		if e.IsDir() || !(strings.HasPrefix(n, "LICENSE") || strings.HasPrefix(n, "LICENCE") || strings.HasPrefix(n, "COPYING")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, k := range licenseKinds {
			if k.re.Match(b) {
				return k.name
			}
		}
	}
	return ""
}
