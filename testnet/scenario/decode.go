package scenario

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commucat/commucat/testnet/censor"
	"go.yaml.in/yaml/v3"
)

// Limits of a scenario file, far above any real one, so a hostile file
// cannot make decoding slow.
const (
	maxFileSize = 1 << 20
	maxNodes    = 1 << 16
)

// Load reads and parses a scenario file. A relative censor file in it is
// resolved against the scenario file's directory by Run.
func Load(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("scenario: read %s: %w", path, err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return s, nil
}

// Parse decodes a scenario strictly (an unknown key, a value of the wrong
// kind, a duplicate key or a YAML alias is an *Error naming the key's
// path and line) and validates it.
func Parse(b []byte) (*Scenario, error) {
	s := new(Scenario)
	if err := decode(b, s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// decode decodes b into s without validating it.
func decode(b []byte, s *Scenario) error {
	if len(b) > maxFileSize {
		return &Error{Err: fmt.Errorf("file of %d bytes over the %d-byte cap", len(b), maxFileSize)}
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
	d := &decoder{}
	return d.decode(doc.Content[0], reflect.ValueOf(s).Elem(), "")
}

// decoder assigns a yaml node tree to Go values by their yaml tags.
type decoder struct{ nodes int }

var (
	durationType = reflect.TypeFor[time.Duration]()
	rateType     = reflect.TypeFor[censor.Rate]()
	textType     = reflect.TypeFor[Text]()
)

func fail(n *yaml.Node, path, format string, args ...any) error {
	return &Error{Path: path, Line: n.Line, Err: fmt.Errorf(format, args...)}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "an alias"
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// hasAnchor reports whether n or a node below it has an anchor or alias.
func hasAnchor(n *yaml.Node, depth int) bool {
	if n.Anchor != "" || n.Kind == yaml.AliasNode {
		return true
	}
	if depth > 64 {
		return true
	}
	for _, c := range n.Content {
		if hasAnchor(c, depth+1) {
			return true
		}
	}
	return false
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	d.nodes++
	if d.nodes > maxNodes {
		return fail(n, path, "document over %d nodes", maxNodes)
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fail(n, path, "yaml anchors and aliases are not supported")
	}
	switch v.Type() {
	case durationType:
		return scalar(n, path, "a duration such as 30s", func(s string) error {
			x, err := time.ParseDuration(s)
			v.SetInt(int64(x))
			return err
		})
	case rateType:
		return scalar(n, path, "a rate such as 128kbit or bytes per second", func(s string) error {
			r, err := censor.ParseRate(s)
			v.SetInt(int64(r))
			return err
		})
	case textType:
		if n.Kind == yaml.MappingNode {
			if hasAnchor(n, 0) {
				return fail(n, path, "yaml anchors and aliases are not supported")
			}
			b, err := yaml.Marshal(n)
			if err != nil {
				return fail(n, path, "%v", err)
			}
			v.SetString(string(b))
			return nil
		}
		return scalar(n, path, "a mapping or a string", func(s string) error {
			v.SetString(s)
			return nil
		})
	}
	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return nil
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	case reflect.Struct:
		if isNull(n) {
			return nil
		}
		return d.structure(n, v, path)
	case reflect.Slice:
		if isNull(n) {
			v.SetZero()
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return fail(n, path, "want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if isNull(n) {
			v.SetZero()
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return fail(n, path, "want a mapping, got %s", kindName(n))
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || isNull(k) {
				return fail(k, path, "want a key, got %s", kindName(k))
			}
			p := join(path, k.Value)
			kv := reflect.ValueOf(k.Value).Convert(v.Type().Key())
			if m.MapIndex(kv).IsValid() {
				return fail(k, p, "duplicate key")
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if err := d.decode(val, e, p); err != nil {
				return err
			}
			m.SetMapIndex(kv, e)
		}
		v.Set(m)
		return nil
	case reflect.String:
		return scalar(n, path, "a string", func(s string) error {
			v.SetString(s)
			return nil
		})
	case reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint16, reflect.Uint64, reflect.Float64:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return fail(n, path, "want a %s, got %s", v.Kind(), kindName(n))
		}
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil {
			return fail(n, path, "want a %s, got %q", v.Kind(), n.Value)
		}
		v.Set(p.Elem())
		return nil
	}
	return fail(n, path, "cannot decode into %s", v.Type())
}

// scalar calls parse with a scalar's value, and names want on failure.
func scalar(n *yaml.Node, path, want string, parse func(string) error) error {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return fail(n, path, "want %s, got %s", want, kindName(n))
	}
	if err := parse(n.Value); err != nil {
		return fail(n, path, "want %s, got %q", want, n.Value)
	}
	return nil
}

// tagName returns a struct field's yaml key.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// fieldByTag returns the field of struct value v whose yaml tag names key.
func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.IsExported() && tagName(f) == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return fail(n, path, "want a mapping, got %s", kindName(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fail(k, path, "want a key, got %s", kindName(k))
		}
		p := join(path, k.Value)
		if seen[k.Value] {
			return fail(k, p, "duplicate key")
		}
		seen[k.Value] = true
		f, ok := fieldByTag(v, k.Value)
		if !ok {
			return fail(k, p, "unknown field")
		}
		if err := d.decode(val, f, p); err != nil {
			return err
		}
	}
	return nil
}

// Encode returns s as a scenario file that Parse reads back to an equal
// Scenario: zero fields are left out, durations and rates are written as
// Parse reads them.
func Encode(s *Scenario) ([]byte, error) {
	n := encode(reflect.ValueOf(s).Elem())
	if n == nil {
		n = &yaml.Node{Kind: yaml.MappingNode}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("scenario: encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("scenario: encode: %w", err)
	}
	return b.Bytes(), nil
}

// str returns a string scalar node.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// encode returns the node of v, or nil for a zero value.
func encode(v reflect.Value) *yaml.Node {
	if v.IsZero() {
		if v.Kind() == reflect.Pointer || v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
			if v.IsNil() {
				return nil
			}
		} else {
			return nil
		}
	}
	switch v.Type() {
	case durationType:
		return str(time.Duration(v.Int()).String())
	case rateType:
		return str(strconv.FormatInt(v.Int(), 10))
	case textType:
		return str(v.String())
	}
	switch v.Kind() {
	case reflect.Pointer:
		n := encode(v.Elem())
		if n == nil {
			switch v.Elem().Kind() {
			case reflect.Struct:
				n = &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
			default:
				n = &yaml.Node{}
				n.Encode(v.Elem().Interface())
			}
		}
		return n
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || tagName(f) == "" || tagName(f) == "-" {
				continue
			}
			c := encode(v.Field(i))
			if c == nil {
				continue
			}
			n.Content = append(n.Content, str(tagName(f)), c)
		}
		if len(n.Content) == 0 {
			return nil
		}
		return n
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for i := range v.Len() {
			c := encode(v.Index(i))
			if c == nil {
				c = zeroNode(v.Index(i))
			}
			n.Content = append(n.Content, c)
		}
		return n
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			c := encode(v.MapIndex(k))
			if c == nil {
				c = zeroNode(v.MapIndex(k))
			}
			n.Content = append(n.Content, str(k.String()), c)
		}
		return n
	case reflect.String:
		return str(v.String())
	}
	n := &yaml.Node{}
	if err := n.Encode(v.Interface()); err != nil {
		return nil
	}
	return n
}

// zeroNode is the node of a zero element of a list or map, which must be
// written out.
func zeroNode(v reflect.Value) *yaml.Node {
	switch v.Kind() {
	case reflect.Struct:
		return &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	case reflect.Map:
		return &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
	case reflect.Slice:
		return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	case reflect.Pointer:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
		}
		return zeroNode(v.Elem())
	case reflect.String:
		return str("")
	}
	n := &yaml.Node{}
	n.Encode(v.Interface())
	return n
}
