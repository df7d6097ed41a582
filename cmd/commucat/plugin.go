package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/commucat/commucat/plugins"
)

// pluginsFile in a state directory holds the plugin settings: folders,
// pins, require_pinned, ring_flows and env. `commucat plugin pin` writes it.
const pluginsFile = "plugins.yaml"

// pluginSettings is the content of pluginsFile.
type pluginSettings struct {
	// Dirs are the plugin folders; if empty, plugins/ in the state
	// directory and plugins/ beside the commucat binary.
	Dirs []string `yaml:"dirs,omitempty"`
	// RequirePinned refuses plugins without a pin.
	RequirePinned bool `yaml:"require_pinned,omitempty"`
	// Pins maps plugin names to the hex SHA-256 of their binaries.
	Pins map[string]string `yaml:"pins,omitempty"`
	// RingFlows is plugins.HostConfig.RingFlows: how many connections at
	// once carry their bytes through shared memory; 0 for the default,
	// -1 for none.
	RingFlows int `yaml:"ring_flows,omitempty"`
	// Env is plugins.HostConfig.PluginEnv: variables ("KEY=value") added
	// to the environment of the plugin each key names.
	Env pluginEnv `yaml:"env,omitempty"`
}

// pluginEnv is env in pluginsFile: plugin names to lists of KEY=value.
// Its decoding errors name the line, never a value, which may be a
// secret (go.yaml.in/yaml's own quote the start of a value); a key is
// quoted only if it is a plugin name. Aliases are followed, and a null
// list is empty.
type pluginEnv map[string][]string

// UnmarshalYAML implements yaml.Unmarshaler.
func (e *pluginEnv) UnmarshalYAML(n *yaml.Node) error {
	n = unalias(n)
	if isNull(n) {
		*e = nil
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: env: want plugin names, each with a list of KEY=value", n.Line)
	}
	m := make(pluginEnv, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := unalias(n.Content[i]), unalias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" || !plugins.ValidName(k.Value) {
			return fmt.Errorf("line %d: env: a key that is not a plugin name", k.Line)
		}
		if _, dup := m[k.Value]; dup {
			return fmt.Errorf("line %d: env: plugin %q given twice", k.Line, k.Value)
		}
		var list []string
		switch {
		case isNull(v):
		case v.Kind == yaml.SequenceNode:
			list = make([]string, 0, len(v.Content))
			for j, item := range v.Content {
				var kv string
				item = unalias(item)
				if item.Kind != yaml.ScalarNode || item.Decode(&kv) != nil {
					return fmt.Errorf("line %d: env: plugin %q, entry %d: want KEY=value", item.Line, k.Value, j)
				}
				list = append(list, kv)
			}
		default:
			return fmt.Errorf("line %d: env: plugin %q: want a list of KEY=value", v.Line, k.Value)
		}
		m[k.Value] = list
	}
	*e = m
	return nil
}

// unalias follows n's aliases to the node they name.
func unalias(n *yaml.Node) *yaml.Node {
	for i := 0; i < 16 && n.Kind == yaml.AliasNode && n.Alias != nil; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is YAML's null ("~", "null" or nothing).
func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// loadPluginSettings reads pluginsFile in dir; a missing file is empty
// settings. Unknown fields are errors.
func loadPluginSettings(dir string) (pluginSettings, error) {
	path := filepath.Join(dir, pluginsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return pluginSettings{}, nil
	}
	if err != nil {
		return pluginSettings{}, err
	}
	s, err := parsePluginSettings(b)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// parsePluginSettings decodes the content of pluginsFile.
func parsePluginSettings(b []byte) (pluginSettings, error) {
	var s pluginSettings
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&s); err != nil && !errors.Is(err, io.EOF) {
		if te, ok := errors.AsType[*yaml.TypeError](err); ok {
			for i, m := range te.Errors {
				te.Errors[i] = unknownFieldRE.ReplaceAllString(m, "unknown field $1 (known: "+pluginSettingsKeys()+")")
			}
		}
		return pluginSettings{}, err
	}
	return s, nil
}

// pluginSettingsKeys lists the keys of pluginsFile, from pluginSettings'
// yaml tags.
func pluginSettingsKeys() string {
	var keys []string
	for f := range reflect.TypeFor[pluginSettings]().Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return strings.Join(keys, ", ")
}

// unknownFieldRE matches the yaml package's message for a key that names
// no field, which names a Go type instead of the file's fields.
var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

// savePluginSettings writes pluginsFile in dir (mode 0600), atomically.
func savePluginSettings(dir string, s pluginSettings) error {
	path := filepath.Join(dir, pluginsFile)
	b, err := yaml.Marshal(s)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// pluginHostConfig is the plugin host's configuration for a state
// directory.
func pluginHostConfig(dir string) (plugins.HostConfig, error) {
	s, err := loadPluginSettings(dir)
	if err != nil {
		return plugins.HostConfig{}, err
	}
	cfg, err := s.hostConfig(dir)
	if err != nil {
		return plugins.HostConfig{}, fmt.Errorf("%s: %w", filepath.Join(dir, pluginsFile), err)
	}
	return cfg, nil
}

// hostConfig is the plugin host's configuration from s for the state
// directory dir, validated.
func (s pluginSettings) hostConfig(dir string) (plugins.HostConfig, error) {
	if s.RingFlows < -1 {
		return plugins.HostConfig{}, fmt.Errorf("ring_flows %d: want -1 (none), 0 (the default) or a number of connections", s.RingFlows)
	}
	cfg := plugins.HostConfig{StateDir: dir, RequirePinned: s.RequirePinned, Pins: s.Pins, RingFlows: s.RingFlows, PluginEnv: s.Env}
	if len(s.Dirs) > 0 {
		cfg.Dirs = s.Dirs
	}
	if err := cfg.Validate(); err != nil {
		return plugins.HostConfig{}, err
	}
	return cfg, nil
}

// newPluginHost returns a plugin host for the state directory dir, its
// plugins discovered and started, and its configuration; the caller
// registers them (Host.Register) and closes the host.
func newPluginHost(dir string, only []string, log *slog.Logger) (*plugins.Host, []plugins.Info, plugins.HostConfig, error) {
	cfg, err := pluginHostConfig(dir)
	if err != nil {
		return nil, nil, cfg, err
	}
	cfg.Only = only
	h, err := plugins.NewHost(cfg, log)
	if err != nil {
		return nil, nil, cfg, err
	}
	infos, err := h.Discover()
	if err != nil {
		log.Warn("plugin discovery", "error", err)
	}
	return h, infos, cfg, nil
}

func newPluginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:          "plugin",
		Short:        "List and pin transport plugins",
		SilenceUsage: true,
		Long: `Transport plugins are binaries named commucat-transport-<name> in the
plugin folders: plugins/ in the state directory, then plugins/ beside the
commucat binary (or the folders listed under dirs: in plugins.yaml in the
state directory). Pins and require_pinned live in the same file.`,
	}
	return groupCmd(cmd, newPluginListCmd(), newPluginPinCmd())
}

func newPluginListCmd() *cobra.Command {
	var state string
	var params bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the plugins found, with version, capabilities, path, hash and pin",
		Long: `List every plugin binary found. Each allowed plugin is started to ask
for its name, version and capabilities, then stopped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := anyStateDir(state, "gateway")
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			h, infos, cfg, err := newPluginHost(dir, nil, log)
			if err != nil {
				return err
			}
			defer h.Close()
			if len(infos) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no plugins found in %v\n", pluginDirs(cfg))
				return nil
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tVERSION\tCAPABILITIES\tPINNED\tSHA256\tPATH\tSTATUS")
			for _, in := range infos {
				status, pinned := "ok", yesNo(in.Pinned)
				switch {
				case in.Err != nil:
					status = "refused: " + strings.Join(strings.Fields(terminalText(in.Err.Error())), " ") // one line
				case isBuiltin(in.Name):
					status = "not used: shadowed by the built-in " + in.Name
				}
				if errors.Is(in.Err, plugins.ErrPinMismatch) {
					pinned = "mismatch"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Name, orDash(terminalText(in.Version)), orDash(in.Capabilities.String()),
					pinned, orDash(in.SHA256), in.Path, status)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if params {
				if err := printPluginParams(cmd.OutOrStdout(), infos); err != nil {
					return err
				}
			}
			for _, name := range slices.Sorted(maps.Keys(cfg.PluginEnv)) {
				if !slices.ContainsFunc(infos, func(in plugins.Info) bool { return in.Name == name }) {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: env names %s, but no plugin of that name was found\n", filepath.Join(dir, pluginsFile), name)
				}
			}
			return h.Close()
		},
	}
	cmd.Flags().BoolVar(&params, "params", false, "also list the parameters each plugin accepts, as it describes them")
	cmd.Flags().StringVar(&state, "state", "", "state directory, a gateway's or a client's (default $COMMUCAT_STATE or $XDG_STATE_HOME/commucat/gateway)")
	return cmd
}

// printPluginParams writes the parameters each plugin of infos says it
// accepts, with the roles that take them; the plugin's own words are made
// safe for a terminal.
func printPluginParams(out io.Writer, infos []plugins.Info) error {
	for _, in := range infos {
		if len(in.Params) == 0 {
			continue
		}
		if _, err := fmt.Fprintf(out, "\n%s parameters:\n", in.Name); err != nil {
			return err
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		for _, p := range in.Params {
			var roles []string
			if p.Client {
				roles = append(roles, "client")
			}
			if p.Server {
				roles = append(roles, "server")
			}
			if p.Required {
				roles = append(roles, "required")
			}
			fmt.Fprintf(w, "  %s\t%s\t%s\n", terminalText(p.Name), orDash(strings.Join(roles, ",")), terminalText(p.Doc))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func newPluginPinCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "pin NAME",
		Short: "Pin a plugin binary's SHA-256 in plugins.yaml in the state directory",
		Long: `Pin the SHA-256 of the plugin binary NAME as it is now. A pinned plugin
whose binary changes is refused until it is pinned again; with
require_pinned: true in plugins.yaml, unpinned plugins are refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			dir, err := anyStateDir(state, "gateway")
			if err != nil {
				return err
			}
			cfg, err := pluginHostConfig(dir)
			if err != nil {
				return err
			}
			h, err := plugins.NewHost(cfg, nil)
			if err != nil {
				return err
			}
			defer h.Close()
			infos, err := h.Scan()
			if err != nil {
				return err
			}
			var found *plugins.Info
			for i := range infos { // the first of a name is the one used
				if infos[i].Name == name {
					found = &infos[i]
					break
				}
			}
			if found != nil && found.SHA256 == "" {
				return found.Err
			}
			if found == nil {
				return fmt.Errorf("no plugin %q in %v", name, pluginDirs(cfg))
			}
			s, err := loadPluginSettings(dir)
			if err != nil {
				return err
			}
			if s.Pins == nil {
				s.Pins = make(map[string]string)
			}
			s.Pins[name] = found.SHA256
			if err := savePluginSettings(dir, s); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pinned %s %s (%s) in %s\n", name, found.SHA256, found.Path, filepath.Join(dir, pluginsFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "state directory, a gateway's or a client's (default $COMMUCAT_STATE or $XDG_STATE_HOME/commucat/gateway)")
	return cmd
}

// pluginDirs lists the folders a host configuration searches.
func pluginDirs(cfg plugins.HostConfig) []string {
	if cfg.Dirs != nil {
		return cfg.Dirs
	}
	return plugins.DefaultDirs(cfg.StateDir)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
