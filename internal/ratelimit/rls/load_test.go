package rls

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeFile writes content to dir/name, creating parent directories.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// configMapDir builds the layout Kubernetes gives a mounted ConfigMap: the files live in a
// timestamped directory, "..data" points at it, and each top-level name points into "..data".
func configMapDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, dir, filepath.Join("..2026_01_01_00_00_00.000000001", name), content)
	}
	symlink(t, "..2026_01_01_00_00_00.000000001", filepath.Join(dir, "..data"))
	for name := range files {
		symlink(t, filepath.Join("..data", name), filepath.Join(dir, name))
	}
	return dir
}

func TestLoadDir(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(t *testing.T) string
		wantDomains []string
	}{
		{
			name: "kubernetes configmap reads each file once",
			setup: func(t *testing.T) string {
				return configMapDir(t, map[string]string{
					"a.yaml": "domain: a\n",
					"b.yml":  "domain: b\n",
				})
			},
			wantDomains: []string{"a", "b"},
		},
		{
			name:        "empty dir",
			setup:       func(t *testing.T) string { return t.TempDir() },
			wantDomains: []string{},
		},
		{
			name: "other files ignored",
			setup: func(t *testing.T) string {
				dir := t.TempDir()
				writeFile(t, dir, "a.yaml", "domain: a\n")
				writeFile(t, dir, "README.md", "not yaml")
				writeFile(t, dir, "b.json", "{}")
				writeFile(t, dir, "c.yaml.bak", "bogus: [")
				writeFile(t, dir, ".hidden.yaml", "bogus: [")
				writeFile(t, dir, "sub/d.yaml", "domain: d\n")
				if err := os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755); err != nil {
					t.Fatal(err)
				}
				return dir
			},
			wantDomains: []string{"a"},
		},
		{
			name: "plain symlink to a file elsewhere",
			setup: func(t *testing.T) string {
				dir, other := t.TempDir(), t.TempDir()
				writeFile(t, other, "x.txt", "domain: x\n")
				symlink(t, filepath.Join(other, "x.txt"), filepath.Join(dir, "x.yaml"))
				return dir
			},
			wantDomains: []string{"x"},
		},
		{
			name:        "testdata",
			setup:       func(t *testing.T) string { return "testdata/reference" },
			wantDomains: []string{"messaging", "mongo_cps"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LoadDir(tt.setup(t))
			if err != nil {
				t.Fatalf("LoadDir: %v", err)
			}
			if got := cfg.Domains(); !slices.Equal(got, tt.wantDomains) {
				t.Errorf("Domains() = %v, want %v", got, tt.wantDomains)
			}
		})
	}
}

func TestLoadDirErrors(t *testing.T) {
	t.Run("missing dir", func(t *testing.T) {
		_, err := LoadDir(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadDir: %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("dangling symlink", func(t *testing.T) {
		dir := t.TempDir()
		symlink(t, filepath.Join(dir, "gone.yaml"), filepath.Join(dir, "a.yaml"))
		_, err := LoadDir(dir)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadDir: %v, want fs.ErrNotExist", err)
		}
	})
	// Files are parsed in name order, so the second of two files with one domain is the one
	// blamed, and errors name the top-level file, not the ConfigMap's hidden one.
	t.Run("errors name the file", func(t *testing.T) {
		dir := configMapDir(t, map[string]string{
			"b.yaml": "domain: d\n",
			"a.yaml": "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n",
			"c.yaml": "domain: d\n",
		})
		_, err := LoadDir(dir)
		checkErrors(t, err, []wantError{
			{"a.yaml", 4, "descriptors[0].rate_limit.unit", `invalid unit "fortnight"`},
			{"b.yaml", 1, "domain", `duplicate domain "d" (already in a.yaml)`},
			{"c.yaml", 1, "domain", `duplicate domain "d" (already in a.yaml)`},
		})
	})
}
