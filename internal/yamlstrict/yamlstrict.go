// Package yamlstrict decodes one YAML document into Go values strictly: a
// key that names no field, a duplicate key, a value of the wrong kind, an
// anchor or alias, a second document, and a document over its size or
// node budget are errors naming the key path at fault (such as
// rules[2].match.fet.probability) and its line.
//
// The yaml package builds the node tree; a Decoder walks it and assigns
// it to structs by their yaml tags, and to slices, maps, strings, bools
// and numbers. Other types (rates, addresses, actions, raw text) are
// decoded by hooks the caller registers per type, so that each package
// keeps only its own types. time.Duration is decoded from Go syntax
// ("30s") unless a hook takes it over.
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Limits of a document, far above any real configuration file, so that a
// hostile file cannot make decoding slow.
const (
	// DefaultMaxSize is Decoder.MaxSize when zero, in bytes.
	DefaultMaxSize = 1 << 20
	// DefaultMaxNodes is Decoder.MaxNodes when zero.
	DefaultMaxNodes = 1 << 16
)

// Error is a decoding error: the key path at fault (such as
// "hosts[0].up.rate", empty for the document as a whole), its line when
// known, and the cause. Callers usually copy the fields into their own
// error type.
type Error struct {
	Path string
	Line int
	Err  error
}

// Error returns "yamlstrict: PATH (line N): cause", leaving out the path
// or the line when not known.
func (e *Error) Error() string {
	switch {
	case e.Path != "" && e.Line > 0:
		return fmt.Sprintf("yamlstrict: %s (line %d): %v", e.Path, e.Line, e.Err)
	case e.Path != "":
		return fmt.Sprintf("yamlstrict: %s: %v", e.Path, e.Err)
	case e.Line > 0:
		return fmt.Sprintf("yamlstrict: line %d: %v", e.Line, e.Err)
	}
	return "yamlstrict: " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error at node n and key path path.
func Errorf(n *yaml.Node, path, format string, args ...any) error {
	return &Error{Path: path, Line: n.Line, Err: fmt.Errorf(format, args...)}
}

// A Hook decodes node n into v, a settable value of the type the hook is
// registered for, at key path path. The node budget and an anchor or
// alias on n are checked before a hook runs; the nodes below n are the
// hook's to check, or to decode with d.DecodeNode. An error it returns
// that is not an *Error is reported at n and path.
type Hook func(d *Decoder, n *yaml.Node, v reflect.Value, path string) error

// Scalar returns a hook for values of type T that parses a scalar with
// parse. On a non-scalar, a null or a parse error it fails with
// "want WANT, got VALUE", such as `want a duration such as 30s, got "soon"`.
func Scalar[T any](want string, parse func(string) (T, error)) Hook {
	return func(_ *Decoder, n *yaml.Node, v reflect.Value, path string) error {
		if v.Type() != reflect.TypeFor[T]() {
			return Errorf(n, path, "cannot decode into %s", v.Type())
		}
		return ParseScalar(n, path, want, func(s string) error {
			x, err := parse(s)
			if err == nil {
				v.Set(reflect.ValueOf(x))
			}
			return err
		})
	}
}

// ParseScalar calls parse with the value of scalar n, and names want when
// n is not a scalar, is null, or parse fails.
func ParseScalar(n *yaml.Node, path, want string, parse func(string) error) error {
	if n.Kind != yaml.ScalarNode || IsNull(n) {
		return Errorf(n, path, "want %s, got %s", want, KindName(n))
	}
	if err := parse(n.Value); err != nil {
		return Errorf(n, path, "want %s, got %q", want, n.Value)
	}
	return nil
}

// KindName names what node n is, for errors: "a mapping", "a list", the
// quoted value of a scalar, or "an alias".
func KindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

// IsNull reports whether n is a null scalar ("null", "~" or nothing).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// Join returns the key path of key below path: "a.b".
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var durationHook = Scalar("a duration such as 30s", time.ParseDuration)

// A Decoder decodes documents strictly. Its zero value decodes with the
// default limits and no hooks. A Decoder counts the nodes of the document
// it decodes, so it is not safe for concurrent use; Hooks may be shared.
type Decoder struct {
	// Hooks decode the values of the types they are registered for,
	// before the generic rules by kind.
	Hooks map[reflect.Type]Hook
	// MaxSize caps a document in bytes; if zero, DefaultMaxSize.
	MaxSize int
	// MaxNodes caps the nodes decoded; if zero, DefaultMaxNodes.
	MaxNodes int
	// Lines, if not nil, receives the line of each key path decoded: the
	// line of its key, or of its value for a list element.
	Lines map[string]int

	nodes int
}

// Decode decodes the one YAML document in b into v, a non-nil pointer.
// Its errors are *Error; an error about the document as a whole has an
// empty Path.
func (d *Decoder) Decode(b []byte, v any) error {
	d.nodes = 0
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return &Error{Err: fmt.Errorf("cannot decode into %T", v)}
	}
	limit := d.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	if len(b) > limit {
		return &Error{Err: fmt.Errorf("file of %d bytes over the %d-byte cap", len(b), limit)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Error{Err: errors.New("empty document")}
		}
		return &Error{Err: fmt.Errorf("yaml: %w", err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &Error{Err: errors.New("more than one yaml document")}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return &Error{Err: errors.New("not a yaml document")}
	}
	return d.DecodeNode(doc.Content[0], rv.Elem(), "")
}

// SetLine records line as the line of key path path, if d.Lines is set.
func (d *Decoder) SetLine(path string, line int) {
	if d.Lines != nil {
		d.Lines[path] = line
	}
}

// DecodeNode decodes node n into the settable value v at key path path.
// Hooks call it to decode nested values.
func (d *Decoder) DecodeNode(n *yaml.Node, v reflect.Value, path string) error {
	d.nodes++
	limit := d.MaxNodes
	if limit <= 0 {
		limit = DefaultMaxNodes
	}
	if d.nodes > limit {
		return Errorf(n, path, "document over %d nodes", limit)
	}
	if path != "" && d.Lines != nil {
		if _, ok := d.Lines[path]; !ok {
			d.Lines[path] = n.Line
		}
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return Errorf(n, path, "yaml anchors and aliases are not supported")
	}
	hook := d.Hooks[v.Type()]
	if hook == nil && v.Type() == reflect.TypeFor[time.Duration]() {
		hook = durationHook
	}
	if hook != nil {
		err := hook(d, n, v, path)
		if _, ok := err.(*Error); err != nil && !ok {
			err = &Error{Path: path, Line: n.Line, Err: err}
		}
		return err
	}
	switch v.Kind() {
	case reflect.Pointer:
		if IsNull(n) {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.DecodeNode(n, v.Elem(), path)
	case reflect.Struct:
		if IsNull(n) {
			return nil
		}
		return d.structure(n, v, path)
	case reflect.Slice:
		return d.list(n, v, path)
	case reflect.Map:
		return d.mapping(n, v, path)
	case reflect.String:
		return ParseScalar(n, path, "a string", func(s string) error {
			v.SetString(s)
			return nil
		})
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		want := "a number"
		switch v.Kind() {
		case reflect.Bool:
			want = "true or false"
		case reflect.Int, reflect.Int64:
			want = "an integer"
		case reflect.Int8, reflect.Int16, reflect.Int32:
			want = fmt.Sprintf("an integer from %d to %d", int64(-1)<<(v.Type().Bits()-1), uint64(1)<<(v.Type().Bits()-1)-1)
		case reflect.Uint, reflect.Uint64:
			want = "an integer of 0 or more"
		case reflect.Uint8, reflect.Uint16, reflect.Uint32:
			want = fmt.Sprintf("an integer from 0 to %d", ^uint64(0)>>(64-v.Type().Bits()))
		}
		if n.Kind != yaml.ScalarNode || IsNull(n) {
			return Errorf(n, path, "want %s, got %s", want, KindName(n))
		}
		// yaml decodes 1.5 into an int as 1: an integer field takes
		// only an integer.
		isInt := v.Kind() != reflect.Bool && v.Kind() != reflect.Float32 && v.Kind() != reflect.Float64
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil || isInt && n.ShortTag() != "!!int" {
			return Errorf(n, path, "want %s, got %q", want, n.Value)
		}
		v.Set(p.Elem())
		return nil
	}
	return Errorf(n, path, "cannot decode into %s", v.Type())
}

// fieldByTag returns the field of struct value v whose yaml tag names key.
func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	if key == "" || key == "-" {
		return reflect.Value{}, false
	}
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func (d *Decoder) structure(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return Errorf(n, path, "want a mapping, got %s", KindName(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return Errorf(k, path, "want a key, got %s", KindName(k))
		}
		p := Join(path, k.Value)
		if seen[k.Value] {
			return Errorf(k, p, "duplicate key")
		}
		seen[k.Value] = true
		f, ok := fieldByTag(v, k.Value)
		if !ok {
			return Errorf(k, p, "unknown field")
		}
		d.SetLine(p, k.Line)
		if err := d.DecodeNode(val, f, p); err != nil {
			return err
		}
	}
	return nil
}

// list decodes a sequence into a new slice, which replaces v's.
func (d *Decoder) list(n *yaml.Node, v reflect.Value, path string) error {
	if IsNull(n) {
		v.SetZero()
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return Errorf(n, path, "want a list, got %s", KindName(n))
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		if err := d.DecodeNode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// mapping decodes a mapping with string keys into a new map, which
// replaces v's.
func (d *Decoder) mapping(n *yaml.Node, v reflect.Value, path string) error {
	if IsNull(n) {
		v.SetZero()
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return Errorf(n, path, "want a mapping, got %s", KindName(n))
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		return Errorf(n, path, "cannot decode into %s", t)
	}
	m := reflect.MakeMapWithSize(t, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || IsNull(k) {
			return Errorf(k, path, "want a key, got %s", KindName(k))
		}
		p := Join(path, k.Value)
		kv := reflect.ValueOf(k.Value).Convert(t.Key())
		if m.MapIndex(kv).IsValid() {
			return Errorf(k, p, "duplicate key")
		}
		d.SetLine(p, k.Line)
		e := reflect.New(t.Elem()).Elem()
		if err := d.DecodeNode(val, e, p); err != nil {
			return err
		}
		m.SetMapIndex(kv, e)
	}
	v.Set(m)
	return nil
}
