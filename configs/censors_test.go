package configs

import (
	"errors"
	"strings"
	"testing"
)

func TestCensorProfiles(t *testing.T) {
	names := CensorProfileNames()
	if len(names) < 11 {
		t.Fatalf("shipped censor profiles: %v", names)
	}
	for _, name := range names {
		b, err := CensorProfileYAML(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "name: "+name+"\n") {
			t.Errorf("%s.yaml does not name itself %s", name, name)
		}
		b[0] = 'X' // the caller's copy
		if again, _ := CensorProfileYAML(name); again[0] == 'X' {
			t.Errorf("%s: CensorProfileYAML shares the embedded bytes", name)
		}
	}
	if _, err := CensorProfileYAML("../gateway"); !errors.Is(err, ErrUnknownCensorProfile) {
		t.Errorf("unknown profile: %v", err)
	}
}
