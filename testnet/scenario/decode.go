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

	"github.com/commucat/commucat/internal/yamlstrict"
	"github.com/commucat/commucat/testnet/censor"
	"go.yaml.in/yaml/v3"
)

// maxFileSize caps a scenario file: far above any real one.
const maxFileSize = yamlstrict.DefaultMaxSize

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
	d := yamlstrict.Decoder{Hooks: hooks, MaxSize: maxFileSize}
	if err := d.Decode(b, s); err != nil {
		if e, ok := errors.AsType[*yamlstrict.Error](err); ok {
			return &Error{Path: e.Path, Line: e.Line, Err: e.Err}
		}
		return &Error{Err: err}
	}
	return nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	rateType     = reflect.TypeFor[censor.Rate]()
	textType     = reflect.TypeFor[Text]()
)

// hooks decode the scenario's own types; yamlstrict does the rest.
var hooks = map[reflect.Type]yamlstrict.Hook{
	rateType: yamlstrict.Scalar("a rate such as 128kbit or bytes per second", censor.ParseRate),
	textType: decodeText,
}

// decodeText keeps a mapping as YAML text, or takes a string as it is.
func decodeText(_ *yamlstrict.Decoder, n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.MappingNode {
		if hasAnchor(n, 0) {
			return yamlstrict.Errorf(n, path, "yaml anchors and aliases are not supported")
		}
		b, err := yaml.Marshal(n)
		if err != nil {
			return yamlstrict.Errorf(n, path, "%v", err)
		}
		v.SetString(string(b))
		return nil
	}
	return yamlstrict.ParseScalar(n, path, "a mapping or a string", func(s string) error {
		v.SetString(s)
		return nil
	})
}

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

// tagName returns a struct field's yaml key.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
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
