package websocket

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"

	"github.com/commucat/commucat/core/transport"
	"github.com/commucat/commucat/transports/decoy"
)

// PathFile is the file in the state directory that keeps the generated
// secret path (mode 0600).
const PathFile = "secret-path"

// ServerFactory builds the gateway side of the WebSocket transport. dir is
// its private state directory: it keeps the certificate (see
// decoy.LoadOrCreateCert) and the generated secret path there, so that
// invites stay valid across restarts. Parameters: "sni" (the certificate's
// name, published to clients), "path" (a fixed secret path instead of
// the generated one) and "site" (a directory with the static site to show
// everyone else, see decoy.LoadDir; by default the embedded blog); others
// are rejected with transport.ErrBadParams. It returns the public
// parameters "pin", "path" and, if set, "sni".
func ServerFactory(p transport.Params, dir string) (transport.Transport, transport.Params, error) {
	if err := checkKeys(p, "sni", "path", "site"); err != nil {
		return nil, nil, err
	}
	var site http.Handler
	if d := p["site"]; d != "" {
		var err error
		if site, err = decoy.LoadDir(d); err != nil {
			return nil, nil, fmt.Errorf("websocket: parameter site: %w: %w", err, transport.ErrBadParams)
		}
	}
	sni := p["sni"]
	if sni != "" && !validHost(sni) {
		return nil, nil, fmt.Errorf("websocket: parameter sni %q is not a host name: %w", sni, transport.ErrBadParams)
	}
	path := p["path"]
	if path != "" {
		if err := checkPath(path); err != nil {
			return nil, nil, err
		}
	} else {
		var err error
		if path, err = loadOrCreatePath(dir); err != nil {
			return nil, nil, err
		}
	}
	var names []string
	if sni != "" {
		names = []string{sni}
	}
	cert, err := decoy.LoadOrCreateCert(dir, names)
	if err != nil {
		return nil, nil, fmt.Errorf("websocket: %w", err)
	}
	t, err := New(Config{Certificate: &cert, Path: path, SNI: sni, Site: site})
	if err != nil {
		return nil, nil, err
	}
	public := transport.Params{"pin": PinOf(cert.Leaf), "path": path}
	if sni != "" {
		public["sni"] = sni
	}
	return t, public, nil
}

// loadOrCreatePath returns the secret path kept in dir, creating a random
// one ("/" and 22 base64url characters: 128 bits) on first use.
func loadOrCreatePath(dir string) (string, error) {
	name := filepath.Join(dir, PathFile)
	b, err := os.ReadFile(name)
	switch {
	case err == nil:
		if fi, err := os.Stat(name); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("websocket: %s is readable by other users (mode %v); chmod 600 it", name, fi.Mode().Perm())
		}
		p := string(bytes.TrimSpace(b))
		if err := checkPath(p); err != nil {
			return "", fmt.Errorf("websocket: %s holds no valid path: %w", name, err)
		}
		return p, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("websocket: secret path: %w", err)
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", fmt.Errorf("websocket: secret path: %w", err)
	}
	p := "/" + base64.RawURLEncoding.EncodeToString(r[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("websocket: state directory: %w", err)
	}
	if err := writeFileAtomic(name, []byte(p+"\n")); err != nil {
		return "", err
	}
	return p, nil
}

// writeFileAtomic writes b to path with mode 0600 through a temporary file
// in the same directory, so that a crash never leaves a half-written file.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("websocket: write %s: %w", path, err)
	}
	return nil
}
