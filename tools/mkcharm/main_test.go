package main

import (
	"archive/zip"
	"bytes"
	"debug/elf"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// TestPackRealCharm builds the charm binary exactly as `make build` does and checks the archive
// Juju would receive: a static ELF dispatch with mode 0755, YAML that parses, bases in the manifest.
func TestPackRealCharm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the charm binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "dispatch")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test", "-o", bin, "../../cmd/concourse-ci-machine")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building dispatch: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "c.charm")
	yamls := []string{"../../metadata.yaml", "../../config.yaml", "../../actions.yaml"}
	if err := pack(out, bin, []string{runtime.GOARCH}, yamls, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string]*zip.File{}
	for _, f := range zr.File {
		files[f.Name] = f
	}
	for _, want := range []string{"dispatch", "metadata.yaml", "config.yaml", "actions.yaml", "manifest.yaml"} {
		if files[want] == nil {
			t.Fatalf("archive lacks %s; has %v", want, names(zr.File))
		}
	}
	if len(files) != 5 {
		t.Errorf("archive has stray entries: %v", names(zr.File))
	}
	d := files["dispatch"]
	if got := d.Mode().Perm(); got != 0o755 {
		t.Errorf("dispatch mode = %v; want 0755", got)
	}
	data := read(t, d)
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("dispatch is not ELF: %v", err)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("dispatch is dynamically linked (program header %v); want a static binary", p.Type)
		}
	}
	for _, y := range []string{"metadata.yaml", "config.yaml", "actions.yaml", "manifest.yaml"} {
		var v map[string]any
		if err := yaml.Unmarshal(read(t, files[y]), &v); err != nil {
			t.Errorf("%s does not parse: %v", y, err)
		}
	}
	var m struct {
		Bases []struct {
			Name, Channel string
			Architectures []string
		}
	}
	if err := yaml.Unmarshal(read(t, files["manifest.yaml"]), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Bases) != 1 || m.Bases[0].Name != "ubuntu" || m.Bases[0].Channel != "24.04" || m.Bases[0].Architectures[0] != runtime.GOARCH {
		t.Errorf("manifest bases = %+v; want ubuntu 24.04 %s", m.Bases, runtime.GOARCH)
	}
}

func TestPackRejectsBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notELF := filepath.Join(dir, "dispatch")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if err := pack(filepath.Join(dir, "x.charm"), notELF, []string{"amd64"}, nil, time.Now()); err == nil {
		t.Error("pack accepted a non-ELF dispatch")
	}
	elfFile := filepath.Join(dir, "elf")
	os.WriteFile(elfFile, []byte("\x7fELF...."), 0o755)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("a: [unclosed"), 0o644)
	if err := pack(filepath.Join(dir, "y.charm"), elfFile, []string{"amd64"}, []string{bad}, time.Now()); err == nil {
		t.Error("pack accepted invalid YAML")
	}
	if _, err := os.Stat(filepath.Join(dir, "y.charm")); !os.IsNotExist(err) {
		t.Error("a failed pack left an archive behind")
	}
}

func read(t *testing.T, f *zip.File) []byte {
	t.Helper()
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func names(fs []*zip.File) []string {
	var n []string
	for _, f := range fs {
		n = append(n, f.Name)
	}
	return n
}
