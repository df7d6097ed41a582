package censor

import (
	"errors"
	"net/netip"
	"reflect"

	"go.yaml.in/yaml/v3"

	"github.com/commucat/commucat/internal/yamlstrict"
)

// profileHooks decode the profile's own types; yamlstrict does the rest.
var profileHooks = map[reflect.Type]yamlstrict.Hook{
	reflect.TypeFor[netip.Prefix](): yamlstrict.Scalar("an address range such as 198.18.0.0/15", parsePrefix),
	reflect.TypeFor[netip.Addr]():   yamlstrict.Scalar("an IP address", netip.ParseAddr),
	reflect.TypeFor[Rate]():         yamlstrict.Scalar("a rate such as 128kbit or bytes per second", ParseRate),
	reflect.TypeFor[Action]():       decodeAction,
}

// decodeProfile decodes b into p strictly (see yamlstrict): unknown or
// duplicate keys, wrong kinds and aliases are errors with the key path,
// and p.lines receives the line of every key path for Validate's errors.
func decodeProfile(b []byte, p *Profile) error {
	d := yamlstrict.Decoder{Hooks: profileHooks, Lines: p.lines}
	if err := d.Decode(b, p); err != nil {
		if e, ok := errors.AsType[*yamlstrict.Error](err); ok {
			return &ProfileError{Path: e.Path, Line: e.Line, Err: e.Err}
		}
		return &ProfileError{Err: err}
	}
	return nil
}

// parsePrefix reads an address range, or one address as a range of one.
func parsePrefix(s string) (netip.Prefix, error) {
	if pf, err := netip.ParsePrefix(s); err == nil {
		return pf.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// decodeAction decodes a bare action name or a one-key mapping of a name
// to its parameters.
func decodeAction(d *yamlstrict.Decoder, n *yaml.Node, v reflect.Value, path string) error {
	a := v.Addr().Interface().(*Action)
	*a = Action{}
	switch n.Kind {
	case yaml.ScalarNode:
		if yamlstrict.IsNull(n) {
			return nil
		}
		a.Kind = ActionKind(n.Value)
		switch a.Kind {
		case ActionDrop, ActionReset, ActionFreeze, ActionCutOff, ActionProbe, ActionLog:
			return nil
		case ActionDNSInject, ActionThrottle:
			return yamlstrict.Errorf(n, path, "%s needs parameters: {%s: {...}}", n.Value, n.Value)
		}
		return yamlstrict.Errorf(n, path, "unknown action %q", n.Value)
	case yaml.MappingNode:
		if len(n.Content) != 2 {
			return yamlstrict.Errorf(n, path, "want one action, got %d", len(n.Content)/2)
		}
		k, val := n.Content[0], n.Content[1]
		p := yamlstrict.Join(path, k.Value)
		d.SetLine(p, k.Line)
		a.Kind = ActionKind(k.Value)
		switch a.Kind {
		case ActionDNSInject:
			a.DNSInject = new(DNSInject)
			return d.DecodeNode(val, reflect.ValueOf(a.DNSInject).Elem(), p)
		case ActionThrottle:
			a.Throttle = new(Throttle)
			return d.DecodeNode(val, reflect.ValueOf(a.Throttle).Elem(), p)
		case ActionDrop, ActionReset, ActionFreeze, ActionCutOff, ActionProbe, ActionLog:
			if !yamlstrict.IsNull(val) && !(val.Kind == yaml.MappingNode && len(val.Content) == 0) {
				return yamlstrict.Errorf(val, p, "%s takes no parameters", k.Value)
			}
			return nil
		}
		return yamlstrict.Errorf(k, p, "unknown action %q", k.Value)
	}
	return yamlstrict.Errorf(n, path, "want an action name or {name: parameters}, got %s", yamlstrict.KindName(n))
}
