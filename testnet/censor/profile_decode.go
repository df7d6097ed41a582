package censor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxProfileSize caps a profile file: far above any real one.
const maxProfileSize = 1 << 20

// maxYAMLNodes caps the nodes of a profile document, so a hostile file
// cannot make decoding slow.
const maxYAMLNodes = 1 << 16

// decodeProfile decodes b into p strictly: the yaml package builds the
// node tree, and this walk assigns it to the structs by their yaml tags,
// failing on unknown or duplicate keys, wrong kinds and aliases, with the
// key path in the error.
func decodeProfile(b []byte, p *Profile) error {
	if len(b) > maxProfileSize {
		return &ProfileError{Err: fmt.Errorf("file of %d bytes over the %d-byte cap", len(b), maxProfileSize)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &ProfileError{Err: errors.New("empty document")}
		}
		return &ProfileError{Err: fmt.Errorf("yaml: %w", err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &ProfileError{Err: errors.New("more than one yaml document")}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return &ProfileError{Err: errors.New("not a yaml document")}
	}
	d := &nodeDecoder{lines: p.lines}
	return d.decode(doc.Content[0], reflect.ValueOf(p).Elem(), "")
}

type nodeDecoder struct {
	lines map[string]int
	nodes int
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrType     = reflect.TypeFor[netip.Addr]()
	rateType     = reflect.TypeFor[Rate]()
	actionType   = reflect.TypeFor[Action]()
)

func (d *nodeDecoder) fail(n *yaml.Node, path, format string, args ...any) error {
	return &ProfileError{Path: path, Line: n.Line, Err: fmt.Errorf(format, args...)}
}

func kindName(n *yaml.Node) string {
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

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (d *nodeDecoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	d.nodes++
	if d.nodes > maxYAMLNodes {
		return d.fail(n, path, "document over %d nodes", maxYAMLNodes)
	}
	if path != "" {
		if _, ok := d.lines[path]; !ok {
			d.lines[path] = n.Line
		}
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return d.fail(n, path, "yaml anchors and aliases are not supported")
	}
	switch v.Type() {
	case durationType:
		return d.scalar(n, path, "a duration such as 30s", func(s string) error {
			x, err := time.ParseDuration(s)
			v.SetInt(int64(x))
			return err
		})
	case prefixType:
		return d.scalar(n, path, "an address range such as 198.18.0.0/15", func(s string) error {
			if pf, err := netip.ParsePrefix(s); err == nil {
				v.Set(reflect.ValueOf(pf.Masked()))
				return nil
			}
			a, err := netip.ParseAddr(s)
			if err == nil {
				v.Set(reflect.ValueOf(netip.PrefixFrom(a, a.BitLen())))
			}
			return err
		})
	case addrType:
		return d.scalar(n, path, "an IP address", func(s string) error {
			a, err := netip.ParseAddr(s)
			v.Set(reflect.ValueOf(a))
			return err
		})
	case rateType:
		return d.scalar(n, path, "a rate such as 128kbit or bytes per second", func(s string) error {
			r, err := ParseRate(s)
			v.SetInt(int64(r))
			return err
		})
	case actionType:
		return d.action(n, v.Addr().Interface().(*Action), path)
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
			return d.fail(n, path, "want a list, got %s", kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		return d.scalar(n, path, "a string", func(s string) error {
			v.SetString(s)
			return nil
		})
	case reflect.Bool, reflect.Int, reflect.Int64, reflect.Uint16, reflect.Uint32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || isNull(n) {
			return d.fail(n, path, "want a %s, got %s", v.Kind(), kindName(n))
		}
		p := reflect.New(v.Type())
		if err := n.Decode(p.Interface()); err != nil {
			return d.fail(n, path, "want a %s, got %q", v.Kind(), n.Value)
		}
		v.Set(p.Elem())
		return nil
	}
	return d.fail(n, path, "cannot decode into %s", v.Type())
}

// scalar calls parse with a scalar's value, and names want on failure.
func (d *nodeDecoder) scalar(n *yaml.Node, path, want string, parse func(string) error) error {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return d.fail(n, path, "want %s, got %s", want, kindName(n))
	}
	if err := parse(n.Value); err != nil {
		return d.fail(n, path, "want %s, got %q", want, n.Value)
	}
	return nil
}

// fieldByTag returns the field of struct value v whose yaml tag names key.
func fieldByTag(v reflect.Value, key string) (reflect.Value, bool) {
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

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *nodeDecoder) structure(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.fail(n, path, "want a mapping, got %s", kindName(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return d.fail(k, path, "want a key, got %s", kindName(k))
		}
		p := join(path, k.Value)
		if seen[k.Value] {
			return d.fail(k, p, "duplicate key")
		}
		seen[k.Value] = true
		f, ok := fieldByTag(v, k.Value)
		if !ok {
			return d.fail(k, p, "unknown field")
		}
		d.lines[p] = k.Line
		if err := d.decode(val, f, p); err != nil {
			return err
		}
	}
	return nil
}

// action decodes a bare action name or a one-key mapping of a name to its
// parameters.
func (d *nodeDecoder) action(n *yaml.Node, a *Action, path string) error {
	*a = Action{}
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			return nil
		}
		a.Kind = ActionKind(n.Value)
		switch a.Kind {
		case ActionDrop, ActionReset, ActionFreeze, ActionCutOff, ActionProbe, ActionLog:
			return nil
		case ActionDNSInject, ActionThrottle:
			return d.fail(n, path, "%s needs parameters: {%s: {...}}", n.Value, n.Value)
		}
		return d.fail(n, path, "unknown action %q", n.Value)
	case yaml.MappingNode:
		if len(n.Content) != 2 {
			return d.fail(n, path, "want one action, got %d", len(n.Content)/2)
		}
		k, val := n.Content[0], n.Content[1]
		p := join(path, k.Value)
		d.lines[p] = k.Line
		a.Kind = ActionKind(k.Value)
		switch a.Kind {
		case ActionDNSInject:
			a.DNSInject = new(DNSInject)
			return d.decode(val, reflect.ValueOf(a.DNSInject).Elem(), p)
		case ActionThrottle:
			a.Throttle = new(Throttle)
			return d.decode(val, reflect.ValueOf(a.Throttle).Elem(), p)
		case ActionDrop, ActionReset, ActionFreeze, ActionCutOff, ActionProbe, ActionLog:
			if !isNull(val) && !(val.Kind == yaml.MappingNode && len(val.Content) == 0) {
				return d.fail(val, p, "%s takes no parameters", k.Value)
			}
			return nil
		}
		return d.fail(k, p, "unknown action %q", k.Value)
	}
	return d.fail(n, path, "want an action name or {name: parameters}, got %s", kindName(n))
}
