package probes_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/commucat/commucat/probes"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want probes.Target
		ok   bool
	}{
		{"example.org", probes.Target{Kind: probes.KindDomain, Raw: "example.org", Host: "example.org"}, true},
		{"example.org.", probes.Target{Kind: probes.KindDomain, Raw: "example.org.", Host: "example.org"}, true},
		{"example.org:443", probes.Target{Kind: probes.KindEndpoint, Raw: "example.org:443", Host: "example.org", Port: "443"}, true},
		{"192.0.2.1:80", probes.Target{Kind: probes.KindEndpoint, Raw: "192.0.2.1:80", Host: "192.0.2.1", Port: "80"}, true},
		{"[2001:db8::1]:443", probes.Target{Kind: probes.KindEndpoint, Raw: "[2001:db8::1]:443", Host: "2001:db8::1", Port: "443"}, true},
		{"https://example.org/x?y=1", probes.Target{Kind: probes.KindURL, Raw: "https://example.org/x?y=1", Host: "example.org", Port: "443"}, true},
		{"http://example.org:8080/", probes.Target{Kind: probes.KindURL, Raw: "http://example.org:8080/", Host: "example.org", Port: "8080"}, true},
		{"  example.org  ", probes.Target{Kind: probes.KindDomain, Raw: "example.org", Host: "example.org"}, true},
		{"", probes.Target{}, false},
		{"ftp://example.org/", probes.Target{}, false},
		{"https:///nohost", probes.Target{}, false},
		{"example.org:0", probes.Target{}, false},
		{"example.org:65536", probes.Target{}, false},
		{"example.org:http", probes.Target{}, false},
		{"exa mple.org", probes.Target{}, false},
		{"bad..name", probes.Target{}, false},
		{"x\x00y", probes.Target{}, false},
		{strings.Repeat("a", 64) + ".org", probes.Target{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := probes.ParseTarget(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParseTarget(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, probes.ErrBadTarget) {
					t.Errorf("error %v does not wrap ErrBadTarget", err)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseTargets(t *testing.T) {
	in := "# my list\nexample.org\n\n  https://example.org/  \n192.0.2.1:443\n"
	ts, err := probes.ParseTargets(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, x := range ts {
		kinds = append(kinds, x.Kind.String()+" "+x.Addr())
	}
	want := []string{"domain example.org", "url example.org:443", "endpoint 192.0.2.1:443"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	_, err = probes.ParseTargets(strings.NewReader("example.org\nnot a target\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %v does not name line 2", err)
	}
	_, err = probes.ParseTargets(strings.NewReader(strings.Repeat("x", probes.MaxTargetLen+10)))
	if !errors.Is(err, probes.ErrBadTarget) {
		t.Errorf("long line: %v", err)
	}
}

// FuzzParseTargets checks that no targets file panics the parser and that
// every parsed target parses again to itself.
func FuzzParseTargets(f *testing.F) {
	for _, s := range []string{"example.org\n", "https://example.org:8443/p\n# c\n", "[::1]:53\n192.0.2.1:443", "a:b:c\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ts, err := probes.ParseTargets(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, x := range ts {
			again, err := probes.ParseTarget(x.Raw)
			if err != nil {
				t.Fatalf("ParseTarget(%q) of a parsed target: %v", x.Raw, err)
			}
			if diff := cmp.Diff(x, again); diff != "" {
				t.Fatalf("re-parse differs:\n%s", diff)
			}
		}
	})
}
