package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// scan lists the plugin binaries in dirs, in folder order and by name
// within a folder, with their hashes. A missing folder is skipped.
func scan(dirs []string) ([]Info, error) {
	var found []Info
	var errs []error
	for _, dir := range dirs {
		dir, err := filepath.Abs(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("plugins: folder %s: %w", dir, err))
			continue
		}
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("plugins: folder %s: %w", dir, err))
			continue
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			name, ok := nameOf(e.Name())
			if !ok {
				continue
			}
			path := filepath.Join(dir, e.Name())
			fi, err := os.Stat(path) // follows a symlink
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
				continue
			}
			info := Info{Name: name, Path: path}
			info.SHA256, info.Err = hashFile(path)
			found = append(found, info)
		}
	}
	return found, errors.Join(errs...)
}

// hashFile returns the hex SHA-256 of a file's contents.
func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("plugins: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("plugins: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
