package yamlstrict

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the fuzz seeds in testdata/")

// config exercises every rule of the decoder: scalars of each kind,
// lists, maps, nested and recursive structs, and three hooks.
type config struct {
	Name   string            `yaml:"name"`
	Count  int               `yaml:"count"`
	Small  int8              `yaml:"small"`
	Ratio  float64           `yaml:"ratio"`
	Ratio2 float32           `yaml:"ratio32"`
	On     bool              `yaml:"on"`
	Port   uint16            `yaml:"port"`
	Seed   uint64            `yaml:"seed"`
	Wait   wait              `yaml:"wait"`
	Color  color             `yaml:"color"`
	Pick   choice            `yaml:"pick"`
	Tags   []string          `yaml:"tags"`
	Labels map[string]string `yaml:"labels"`
	Ports  map[string]uint16 `yaml:"ports"`
	A      deep              `yaml:"a,omitempty"`
	Next   *config           `yaml:"next"`
}

type deep struct {
	B []leaf `yaml:"b"`
}

type leaf struct {
	C int `yaml:"c"`
}

// wait is decoded by a Scalar hook.
type wait time.Duration

func (w wait) MarshalYAML() (any, error) { return time.Duration(w).String(), nil }

func parseWait(s string) (wait, error) {
	d, err := time.ParseDuration(s)
	return wait(d), err
}

// color is decoded by a hook that returns plain errors.
type color uint8

var colors = []string{"red", "green", "blue"}

func (c color) MarshalYAML() (any, error) { return colors[c], nil }

func decodeColor(_ *Decoder, n *yaml.Node, v reflect.Value, _ string) error {
	for i, name := range colors {
		if n.Kind == yaml.ScalarNode && n.Value == name {
			v.SetUint(uint64(i))
			return nil
		}
	}
	return errors.New("no such color")
}

// choice is a word or {sub: {...}}, decoded by a hook that decodes the
// nested value with DecodeNode, as an action with parameters is.
type choice struct {
	Word string
	Sub  *leaf
}

func (c choice) MarshalYAML() (any, error) {
	if c.Sub != nil {
		return map[string]*leaf{"sub": c.Sub}, nil
	}
	return c.Word, nil
}

func decodeChoice(d *Decoder, n *yaml.Node, v reflect.Value, path string) error {
	c := v.Addr().Interface().(*choice)
	*c = choice{}
	switch {
	case IsNull(n):
		return nil
	case n.Kind == yaml.ScalarNode:
		c.Word = n.Value
		return nil
	case n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[0].Value == "sub":
		p := Join(path, "sub")
		d.SetLine(p, n.Content[0].Line)
		c.Sub = new(leaf)
		return d.DecodeNode(n.Content[1], reflect.ValueOf(c.Sub).Elem(), p)
	}
	return Errorf(n, path, "want a word or {sub: {...}}, got %s", KindName(n))
}

var hooks = map[reflect.Type]Hook{
	reflect.TypeFor[wait]():   Scalar("a duration such as 30s", parseWait),
	reflect.TypeFor[color]():  decodeColor,
	reflect.TypeFor[choice](): decodeChoice,
}

// sample is a config that sets every field, the seed of the round trip.
func sample() *config {
	return &config{
		Name: "x", Count: -3, Small: 7, Ratio: 0.25, Ratio2: 1.5, On: true, Port: 443, Seed: 1 << 63,
		Wait: wait(90 * time.Second), Color: 2, Pick: choice{Sub: &leaf{C: 4}},
		Tags: []string{"a", "null", ""}, Labels: map[string]string{"k": "v", "~": "tilde"},
		Ports: map[string]uint16{"quic": 443},
		A:     deep{B: []leaf{{C: 1}, {C: 2}, {C: 3}}},
		Next:  &config{Name: "inner", Pick: choice{Word: "w"}, Next: &config{}},
	}
}

func TestDecode(t *testing.T) {
	want := sample()
	b, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var got config
	d := Decoder{Hooks: hooks}
	if err := d.Decode(b, &got); err != nil {
		t.Fatalf("decode of\n%s: %v", b, err)
	}
	if diff := cmp.Diff(want, &got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("decode(encode(x)) != x (-want +got):\n%s", diff)
	}
}

// TestDecodeValues checks the values the generic rules give.
func TestDecodeValues(t *testing.T) {
	type durations struct {
		D    time.Duration            `yaml:"d"`
		List []time.Duration          `yaml:"list"`
		Map  map[string]time.Duration `yaml:"map"`
		Ptr  *time.Duration           `yaml:"ptr"`
	}
	ms := 5 * time.Millisecond
	hourHooks := map[reflect.Type]Hook{
		reflect.TypeFor[time.Duration](): Scalar("a time", func(string) (time.Duration, error) { return time.Hour, nil }),
	}
	tests := []struct {
		name  string
		yml   string
		hooks map[reflect.Type]Hook
		into  any // a pointer to the value decoded over
		want  any
	}{
		{"durations", "d: 1m30s\nlist: [1s, 2h]\nmap: {a: 3ms}\nptr: 5ms\n", nil, new(durations),
			&durations{D: 90 * time.Second, List: []time.Duration{time.Second, 2 * time.Hour}, Map: map[string]time.Duration{"a": 3 * time.Millisecond}, Ptr: &ms}},
		{"a hook for time.Duration wins", "d: soon\n", hourHooks, new(durations), &durations{D: time.Hour}},
		{"nulls clear pointers, lists and maps", "next: ~\ntags: null\nlabels:\n", hooks,
			&config{Next: &config{}, Tags: []string{"a"}, Labels: map[string]string{"a": "b"}}, &config{}},
		{"a null struct is left as it is", "a: ~\n", hooks, &config{A: deep{B: []leaf{{C: 1}}}},
			&config{A: deep{B: []leaf{{C: 1}}}}},
		{"fields not given keep their values", "count: 2\n", hooks, &config{Name: "default", Count: 1},
			&config{Name: "default", Count: 2}},
		{"a list replaces the list before", "tags: [b]\n", hooks, &config{Tags: []string{"a", "c"}},
			&config{Tags: []string{"b"}}},
		{"a map replaces the map before", "labels: {b: 2}\n", hooks, &config{Labels: map[string]string{"a": "1"}},
			&config{Labels: map[string]string{"b": "2"}}},
		{"scalars", "name: 5\ncount: 0x10\nratio: .inf\non: true\nseed: 18446744073709551615\n", hooks, new(config),
			&config{Name: "5", Count: 16, Ratio: math.Inf(1), On: true, Seed: math.MaxUint64}},
		{"hooks", "wait: 2m\ncolor: green\npick: {sub: {c: 3}}\nnext: {pick: word}\n", hooks, new(config),
			&config{Wait: wait(2 * time.Minute), Color: 1, Pick: choice{Sub: &leaf{C: 3}}, Next: &config{Pick: choice{Word: "word"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decoder{Hooks: tt.hooks}
			if err := d.Decode([]byte(tt.yml), tt.into); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, tt.into); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestUnexportedField checks that a key naming an unexported field is
// unknown, even with a tag.
func TestUnexportedField(t *testing.T) {
	type secret struct {
		Name   string `yaml:"name"`
		hidden string `yaml:"hidden"`
	}
	var s secret
	var d Decoder
	err := d.Decode([]byte("hidden: x\n"), &s)
	if e, ok := errors.AsType[*Error](err); !ok || e.Path != "hidden" || e.Err.Error() != "unknown field" || s.hidden != "" {
		t.Errorf("error %v, want unknown field hidden", err)
	}
}

// TestDecodeErrors checks that every kind of mistake is an *Error with
// the key path, line and message it must have: callers show them as they
// are.
func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name     string
		yml      string
		maxNodes int
		maxSize  int
		path     string
		line     int
		msg      string
	}{
		{name: "unknown top-level key", yml: "name: x\nnmae: y\n", path: "nmae", line: 2, msg: "unknown field"},
		{name: "unexported field", yml: "hidden: x\n", path: "hidden", line: 1, msg: "unknown field"},
		{name: "empty key", yml: "'': x\n", path: "", line: 1, msg: "unknown field"},
		{name: "unknown nested key", yml: "a:\n  b:\n    - {c: 1}\n    - {d: 2}\n", path: "a.b[1].d", line: 4, msg: "unknown field"},
		{name: "nested path and line", yml: "a:\n  b:\n    - {c: 1}\n    - {c: 2}\n    - {c: x}\n", path: "a.b[2].c", line: 5, msg: `want an integer, got "x"`},
		{name: "recursive path", yml: "next:\n  next:\n    tags: [a, [b]]\n", path: "next.next.tags[1]", line: 3, msg: "want a string, got a list"},
		{name: "duplicate key", yml: "name: x\ncount: 1\nname: y\n", path: "name", line: 3, msg: "duplicate key"},
		{name: "duplicate map key", yml: "labels:\n  a: 1\n  a: 2\n", path: "labels.a", line: 3, msg: "duplicate key"},
		{name: "list wanted", yml: "tags: a\n", path: "tags", line: 1, msg: `want a list, got "a"`},
		{name: "mapping wanted", yml: "a: [1]\n", path: "a", line: 1, msg: "want a mapping, got a list"},
		{name: "map wanted", yml: "labels: x\n", path: "labels", line: 1, msg: `want a mapping, got "x"`},
		{name: "document not a mapping", yml: "- a\n", path: "", line: 1, msg: "want a mapping, got a list"},
		{name: "string wanted", yml: "name: {a: 1}\n", path: "name", line: 1, msg: "want a string, got a mapping"},
		{name: "null string", yml: "name: ~\n", path: "name", line: 1, msg: `want a string, got "~"`},
		{name: "int wanted", yml: "count: [1]\n", path: "count", line: 1, msg: "want an integer, got a list"},
		{name: "null int", yml: "count:\n", path: "count", line: 1, msg: `want an integer, got ""`},
		{name: "int overflow", yml: "small: 300\n", path: "small", line: 1, msg: `want an integer from -128 to 127, got "300"`},
		{name: "fraction into int", yml: "count: 1.5\n", path: "count", line: 1, msg: `want an integer, got "1.5"`},
		{name: "port out of range", yml: "port: 70000\n", path: "port", line: 1, msg: `want an integer from 0 to 65535, got "70000"`},
		{name: "negative unsigned", yml: "seed: -1\n", path: "seed", line: 1, msg: `want an integer of 0 or more, got "-1"`},
		{name: "bool wanted", yml: "on: maybe\n", path: "on", line: 1, msg: `want true or false, got "maybe"`},
		{name: "float wanted", yml: "ratio: half\n", path: "ratio", line: 1, msg: `want a number, got "half"`},
		{name: "key not a scalar", yml: "? [a]\n: 1\n", path: "", line: 1, msg: "want a key, got a list"},
		{name: "null map key", yml: "labels: {~: x}\n", path: "labels", line: 1, msg: `want a key, got "~"`},
		{name: "scalar hook", yml: "wait: soon\n", path: "wait", line: 1, msg: `want a duration such as 30s, got "soon"`},
		{name: "scalar hook on a list", yml: "wait: [1s]\n", path: "wait", line: 1, msg: "want a duration such as 30s, got a list"},
		{name: "scalar hook on null", yml: "wait: null\n", path: "wait", line: 1, msg: `want a duration such as 30s, got "null"`},
		{name: "plain hook error", yml: "name: x\ncolor: pink\n", path: "color", line: 2, msg: "no such color"},
		{name: "hook decoding a nested value", yml: "pick:\n  sub: {c: 1, x: 2}\n", path: "pick.sub.x", line: 2, msg: "unknown field"},
		{name: "hook error", yml: "pick: [a]\n", path: "pick", line: 1, msg: "want a word or {sub: {...}}, got a list"},
		{name: "anchor", yml: "name: &n x\n", path: "name", line: 1, msg: "yaml anchors and aliases are not supported"},
		{name: "anchor on a list", yml: "tags: &t [a]\nnext: {tags: *t}\n", path: "tags", line: 1, msg: "yaml anchors and aliases are not supported"},
		{name: "anchor below", yml: "next:\n  a:\n    b: [&l {c: 1}]\n", path: "next.a.b[0]", line: 3, msg: "yaml anchors and aliases are not supported"},
		{name: "alias key", yml: "&k name: x\nlabels:\n  *k : y\n", path: "labels", line: 3, msg: "want a key, got an alias"},
		{name: "anchor in a hook's value", yml: "pick: {sub: &s {c: 1}}\n", path: "pick.sub", line: 1, msg: "yaml anchors and aliases are not supported"},
		{name: "merge key", yml: "next: &b {name: a}\na: {<<: *b}\n", path: "next", line: 1, msg: "yaml anchors and aliases are not supported"},
		{name: "node budget", yml: "tags: [a, b, c]\n", maxNodes: 3, path: "tags[1]", line: 1, msg: "document over 3 nodes"},
		{name: "default node budget", yml: "tags: [" + strings.Repeat("a,", DefaultMaxNodes) + "]\n", path: fmt.Sprintf("tags[%d]", DefaultMaxNodes-2), line: 1, msg: fmt.Sprintf("document over %d nodes", DefaultMaxNodes)},
		{name: "size cap", yml: "name: abcdef\n", maxSize: 8, msg: "file of 13 bytes over the 8-byte cap"},
		{name: "default size cap", yml: "name: " + strings.Repeat("x", DefaultMaxSize) + "\n", msg: fmt.Sprintf("file of %d bytes over the %d-byte cap", DefaultMaxSize+7, DefaultMaxSize)},
		{name: "empty", yml: "", msg: "empty document"},
		{name: "comments only", yml: "# nothing\n", msg: "empty document"},
		{name: "two documents", yml: "name: x\n---\nname: y\n", msg: "more than one yaml document"},
		{name: "syntax", yml: "name: [x\n", msg: "yaml: yaml: line 1: did not find expected ',' or ']'"},
		{name: "unknown alias", yml: "name: *x\n", msg: "yaml: yaml: unknown anchor 'x' referenced"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decoder{Hooks: hooks, MaxNodes: tt.maxNodes, MaxSize: tt.maxSize, Lines: map[string]int{}}
			err := d.Decode([]byte(tt.yml), new(config))
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("error %v, want an *Error", err)
			}
			if e.Path != tt.path || e.Line != tt.line || e.Err.Error() != tt.msg {
				t.Errorf("error at %q line %d: %q, want %q line %d: %q", e.Path, e.Line, e.Err, tt.path, tt.line, tt.msg)
			}
		})
	}
}

// TestLines checks that Lines holds the line of each key path: its key's
// line, and a list element's own line.
func TestLines(t *testing.T) {
	yml := "name: x\n" +
		"a:\n" +
		"  b:\n" +
		"    - c: 1\n" +
		"    -\n" +
		"      c: 2\n" +
		"labels:\n" +
		"  k:\n" +
		"    v\n" +
		"pick:\n" +
		"  sub:\n" +
		"    c: 3\n"
	d := Decoder{Hooks: hooks, Lines: map[string]int{}}
	if err := d.Decode([]byte(yml), new(config)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{
		"name": 1, "a": 2, "a.b": 3, "a.b[0]": 4, "a.b[0].c": 4, "a.b[1]": 6, "a.b[1].c": 6,
		"labels": 7, "labels.k": 8, "pick": 10, "pick.sub": 11, "pick.sub.c": 12,
	}
	if diff := cmp.Diff(want, d.Lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

// TestDecodeProgrammerErrors checks that a wrong target or hook is an
// error, not a panic.
func TestDecodeProgrammerErrors(t *testing.T) {
	var d Decoder
	var c config
	if err := d.Decode([]byte("name: x\n"), c); err == nil || err.Error() != "yamlstrict: cannot decode into yamlstrict.config" {
		t.Errorf("decode into a non-pointer: %v", err)
	}
	if err := d.Decode([]byte("name: x\n"), (*config)(nil)); err == nil {
		t.Error("decode into a nil pointer: no error")
	}
	type odd struct {
		Ch   chan int       `yaml:"ch"`
		Keys map[int]string `yaml:"keys"`
	}
	if err := d.Decode([]byte("ch: 1\n"), new(odd)); err == nil || err.Error() != "yamlstrict: ch (line 1): cannot decode into chan int" {
		t.Errorf("decode into a channel: %v", err)
	}
	if err := d.Decode([]byte("keys: {1: a}\n"), new(odd)); err == nil || err.Error() != "yamlstrict: keys (line 1): cannot decode into map[int]string" {
		t.Errorf("decode into a map with int keys: %v", err)
	}
	d.Hooks = map[reflect.Type]Hook{reflect.TypeFor[string](): Scalar("a number", func(string) (int, error) { return 1, nil })}
	if err := d.Decode([]byte("name: x\n"), new(config)); err == nil || err.Error() != "yamlstrict: name (line 1): cannot decode into string" {
		t.Errorf("hook of the wrong type: %v", err)
	}
}

// TestDecoderReuse checks that the node budget is per document.
func TestDecoderReuse(t *testing.T) {
	d := Decoder{MaxNodes: 4}
	for range 3 {
		if err := d.Decode([]byte("tags: [a, b]\n"), new(config)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Path: "a.b[2].c", Line: 5, Err: errors.New("unknown field")}, "yamlstrict: a.b[2].c (line 5): unknown field"},
		{&Error{Path: "a", Err: errors.New("bad")}, "yamlstrict: a: bad"},
		{&Error{Line: 1, Err: errors.New("want a mapping, got a list")}, "yamlstrict: line 1: want a mapping, got a list"},
		{&Error{Err: errors.New("empty document")}, "yamlstrict: empty document"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	cause := errors.New("cause")
	if !errors.Is(&Error{Err: cause}, cause) {
		t.Error("Error does not unwrap to its cause")
	}
}

// fuzzSeeds are the inputs FuzzDecode starts from: the encoding of
// sample and documents that fail in each way.
func fuzzSeeds(tb testing.TB) [][]byte {
	b, err := yaml.Marshal(sample())
	if err != nil {
		tb.Fatal(err)
	}
	return [][]byte{
		b,
		[]byte("a:\n  b:\n    - {c: 1}\n    - {c: 2}\n    - {c: x}\n"),
		[]byte("name: &n x\nnext: {name: *n}\n"),
		[]byte("name: x\nname: y\nbogus: 1\n"),
		[]byte("pick: {sub: {c: 1}}\ncolor: blue\nwait: 1m\nlabels: {a: b}\nports: {quic: 443}\n"),
		[]byte("tags: [a, [b], {c: d}]\nnext: ~\n"),
		[]byte("name: x\n---\nname: y\n"),
		[]byte("? [a]\n: 1\n"),
	}
}

// FuzzDecode checks that Decode never panics, that its errors are *Error,
// that every line it records is a real line, and that a config it
// accepts survives yaml.Marshal and Decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c config
		d := Decoder{Hooks: hooks, Lines: map[string]int{}}
		if err := d.Decode(b, &c); err != nil {
			if _, ok := errors.AsType[*Error](err); !ok {
				t.Fatalf("error %v is not an *Error", err)
			}
			return
		}
		for p, l := range d.Lines {
			if p == "" || l <= 0 {
				t.Fatalf("line of %q = %d", p, l)
			}
		}
		enc, err := yaml.Marshal(&c)
		if err != nil {
			t.Fatalf("marshal of a decoded config: %v", err)
		}
		var back config
		d = Decoder{Hooks: hooks}
		if err := d.Decode(enc, &back); err != nil {
			t.Fatalf("decode of a marshaled config: %v\n%s", err, enc)
		}
		if diff := cmp.Diff(&c, &back, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); diff != "" {
			t.Fatalf("round trip (-decoded +again):\n%s", diff)
		}
	})
}

// TestWriteFuzzSeeds writes testdata/fuzz/FuzzDecode under -update.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
