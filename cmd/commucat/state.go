package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Files in a gateway's state directory.
const (
	gatewayKeyFile   = "gateway.key"    // Noise static key, 0600
	signingKeyFile   = "signing.key"    // certificate-signing key, 0600
	gatewayDBFile    = "gateway.db"     // SQLite store
	endpointsFile    = "endpoints.json" // addresses the running gateway bound
	gatewayConfigYML = "gateway.yaml"   // optional config, read when present
	paddingFile      = "padding.seed"   // padding-profile seed, public
)

// Files in a client's state directory.
const (
	deviceKeyFile   = "device.key"   // the device's Noise static key, 0600
	gatewayInfoFile = "gateway.json" // the gateway from the invite, no code
	certFile        = "certificate"  // the device certificate
	clientDBFile    = "client.db"    // seen message ids
)

// stateDir resolves the state directory: the flag, then COMMUCAT_STATE, then
// $XDG_STATE_HOME/commucat/<role> (~/.local/state when XDG_STATE_HOME is
// unset). It creates the directory with mode 0700 and refuses one that
// other users can read, and one that holds the other role's key: gateway
// and client commands both read COMMUCAT_STATE, and a client run in a
// gateway's directory would otherwise tell its user to register there.
func stateDir(flag, role string) (string, error) {
	dir, err := anyStateDir(flag, role)
	if err != nil {
		return "", err
	}
	other, key := "client", deviceKeyFile
	if role == "client" {
		other, key = "gateway", gatewayKeyFile
	}
	if fileExists(filepath.Join(dir, key)) {
		return "", fmt.Errorf("state directory %s is a %s's (it holds %s): give the %s its own with --state DIR (COMMUCAT_STATE is read by both)", dir, other, key, role)
	}
	return dir, nil
}

// anyStateDir is stateDir for commands that work on a gateway's or a
// client's directory alike (plugin list and pin); role names the default.
func anyStateDir(flag, role string) (string, error) {
	dir := flag
	if dir == "" {
		dir = os.Getenv("COMMUCAT_STATE")
	}
	if dir == "" {
		base := os.Getenv("XDG_STATE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("state directory: no --state, COMMUCAT_STATE or home directory: %w", err)
			}
			base = filepath.Join(home, ".local", "state")
		}
		dir = filepath.Join(base, "commucat", role)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("state directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("state directory %s is accessible to other users (mode %04o); run: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	return dir, nil
}

// readSmallFile reads a file of at most max bytes.
func readSmallFile(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}
