// Command mkcharm packs a .charm archive without charmcraft: the dispatch binary (mode 0755), the
// YAML files, and the manifest.yaml Juju 3 reads the bases from (juju-contract §6).
package main

import (
	"archive/zip"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "mkcharm: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkcharm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dispatch := fs.String("dispatch", "", "path of the dispatch binary")
	arch := fs.String("arch", "amd64", "architecture(s) the binary runs on, comma-separated")
	out := fs.String("out", "", "output .charm path")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dispatch == "" || *out == "" || fs.NArg() == 0 {
		return errors.New("usage: mkcharm -dispatch FILE -out FILE.charm [-arch amd64] metadata.yaml [config.yaml actions.yaml]")
	}
	return pack(*out, *dispatch, strings.Split(*arch, ","), fs.Args(), time.Now())
}

// pack writes the archive to a temp file and renames it, so a failed build never leaves a
// truncated .charm where a deploy would pick it up.
func pack(out, dispatch string, arches, yamls []string, now time.Time) error {
	bin, err := os.ReadFile(dispatch)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dispatch, err)
	}
	if !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		return fmt.Errorf("%s is not an ELF binary", dispatch)
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, mode os.FileMode, data []byte) error {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: now.UTC()}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	// Juju applies the stored unix mode when it unpacks the charm (juju-contract §6).
	if err := add("dispatch", 0o755, bin); err != nil {
		return err
	}
	for _, y := range yamls {
		data, err := os.ReadFile(y)
		if err != nil {
			return fmt.Errorf("reading %s: %w", y, err)
		}
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return fmt.Errorf("%s is not valid YAML: %w", y, err)
		}
		if err := add(filepath.Base(y), 0o644, data); err != nil {
			return err
		}
	}
	manifest, err := manifestYAML(arches, now)
	if err != nil {
		return err
	}
	if err := add("manifest.yaml", 0o644, manifest); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// manifestYAML is what charmcraft 3 writes: bases per architecture, analysis attributes unknown
// for a Go binary.
func manifestYAML(arches []string, now time.Time) ([]byte, error) {
	type base struct {
		Name          string   `yaml:"name"`
		Channel       string   `yaml:"channel"`
		Architectures []string `yaml:"architectures"`
	}
	type attr struct {
		Name   string `yaml:"name"`
		Result string `yaml:"result"`
	}
	m := struct {
		CharmcraftVersion string `yaml:"charmcraft-version"`
		StartedAt         string `yaml:"charmcraft-started-at"`
		Bases             []base `yaml:"bases"`
		Analysis          struct {
			Attributes []attr `yaml:"attributes"`
		} `yaml:"analysis"`
	}{
		CharmcraftVersion: "3.0.0 (mkcharm)",
		StartedAt:         now.UTC().Format(time.RFC3339),
	}
	for _, a := range arches {
		m.Bases = append(m.Bases, base{Name: "ubuntu", Channel: "24.04", Architectures: []string{a}})
	}
	m.Analysis.Attributes = []attr{{"language", "unknown"}, {"framework", "unknown"}}
	return yaml.Marshal(m)
}
