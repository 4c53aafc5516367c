package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Manifest is versions/<v>-<id>/.manifest.json: what was installed and how to
// check it without the tarball.
type Manifest struct {
	Version  string         `json:"version"`
	Source   string         `json:"source"`
	SHA1     string         `json:"sha1,omitempty"`   // of the tarball (empty for an unchecked local file)
	SHA256   string         `json:"sha256,omitempty"` // of the tarball
	Files    []ManifestFile `json:"files"`
	Symlinks []ManifestLink `json:"symlinks,omitempty"`
}

// ManifestFile is one regular file, path relative to the version directory.
type ManifestFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   string `json:"mode"` // permission bits in octal, "0755"
}

// ManifestLink is one symlink inside the release (targets never leave it).
type ManifestLink struct {
	Path   string `json:"path"`
	Target string `json:"target"`
}

func modeString(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m.Perm())) }

func parseMode(s string) (fs.FileMode, error) {
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, err
	}
	return fs.FileMode(v).Perm(), nil
}

func readManifest(dir string) (*Manifest, error) {
	p := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &CorruptError{Path: p, Reason: "manifest missing"}
		}
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, &CorruptError{Path: p, Reason: "manifest unreadable: " + err.Error()}
	}
	if m.Version == "" {
		return nil, &CorruptError{Path: p, Reason: "manifest names no version"}
	}
	return &m, nil
}

// quickCheck: every manifest file exists as a regular file with the recorded
// size and mode, and every symlink has its recorded target.
func quickCheck(dir string, m *Manifest) error {
	for _, f := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return &CorruptError{Path: p, Reason: "missing"}
			}
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return &CorruptError{Path: p, Reason: "not a regular file (" + fi.Mode().Type().String() + ")"}
		}
		if fi.Size() != f.Size {
			return &CorruptError{Path: p, Reason: fmt.Sprintf("size %d, manifest says %d", fi.Size(), f.Size)}
		}
		want, err := parseMode(f.Mode)
		if err != nil {
			return &CorruptError{Path: filepath.Join(dir, ManifestName), Reason: fmt.Sprintf("bad mode %q for %s", f.Mode, f.Path)}
		}
		if fi.Mode().Perm() != want {
			return &CorruptError{Path: p, Reason: fmt.Sprintf("mode %s, manifest says %s", modeString(fi.Mode()), f.Mode)}
		}
	}
	for _, l := range m.Symlinks {
		p := filepath.Join(dir, filepath.FromSlash(l.Path))
		got, err := os.Readlink(p)
		if err != nil {
			return &CorruptError{Path: p, Reason: "symlink missing: " + err.Error()}
		}
		if got != l.Target {
			return &CorruptError{Path: p, Reason: fmt.Sprintf("symlink to %q, manifest says %q", got, l.Target)}
		}
	}
	return nil
}

// VerifyQuick checks the release behind `current`: every manifest file present
// with the right size and mode, then probe(binary) where binary is the
// concourse binary inside that release (the caller runs `--version`). probe
// may be nil. Damage is a *CorruptError; nothing installed is an error too.
func (s *Store) VerifyQuick(probe func(binary string) error) error {
	dir, m, err := s.currentManifest()
	if err != nil {
		return err
	}
	if err := quickCheck(dir, m); err != nil {
		return err
	}
	if probe != nil {
		bin := filepath.Join(dir, "bin", "concourse")
		if err := probe(bin); err != nil {
			s.markDamaged(dir)
			return &CorruptError{Path: bin, Reason: "probe failed: " + err.Error()}
		}
	}
	return nil
}

// VerifyFull re-reads every file of the release behind `current` and compares
// its sha256 with the manifest.
func (s *Store) VerifyFull() error {
	dir, m, err := s.currentManifest()
	if err != nil {
		return err
	}
	if err := quickCheck(dir, m); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, f := range m.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		got, err := hashFile(p, buf)
		if err != nil {
			return err
		}
		if got != f.SHA256 {
			s.markDamaged(dir)
			return &CorruptError{Path: p, Reason: fmt.Sprintf("sha256 %s, manifest says %s", got, f.SHA256)}
		}
	}
	return nil
}

func (s *Store) currentManifest() (string, *Manifest, error) {
	dir, err := s.currentDir()
	if err != nil {
		return "", nil, err
	}
	if dir == "" {
		return "", nil, fmt.Errorf("nothing installed in %s (no %s link)", s.opts.Root, CurrentLink)
	}
	m, err := readManifest(dir)
	if err != nil {
		return "", nil, err
	}
	return dir, m, nil
}

func hashFile(p string, buf []byte) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("opening %s: %w", p, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
