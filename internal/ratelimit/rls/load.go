package rls

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadDir parses every .yaml and .yml file directly in dir, in name order, as Parse does. It
// follows symlinks and skips names that start with ".": a Kubernetes ConfigMap volume holds
// its files in a "..2026_..." directory behind a "..data" symlink, with one top-level symlink
// per file, so each file is read once, through its top-level name. Directories and other
// files are ignored. An empty directory is a valid config with no domains; a missing one is
// an error.
func LoadDir(dir string) (*Config, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read rate limit config dir: %w", err)
	}
	var files []File
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) {
			continue
		}
		path := filepath.Join(dir, name)
		// Stat, not the entry's own type, so that a symlink counts as what it points to. A
		// dangling link is an error rather than a file skipped: skipping would silently drop
		// a domain.
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("read rate limit config %s: %w", name, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read rate limit config %s: %w", name, err)
		}
		files = append(files, File{Name: name, Data: data})
	}
	return Parse(files)
}
