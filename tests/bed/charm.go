package bed

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju/jujutest"
)

// Charm is an unpacked charm: a directory with dispatch and the YAML files, plus what the model
// needs from them.
type Charm struct {
	Dir     string // host directory, never modified after LoadCharm
	Name    string
	Meta    jujutest.AppMeta
	Actions []string
}

// LoadCharm unpacks a .charm archive into a directory under tmp (or uses a directory as is) and
// reads metadata.yaml, config.yaml and actions.yaml. dispatch must be present and executable:
// Juju runs it directly (juju-contract §1.1).
func LoadCharm(path, tmp string) (*Charm, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	dir := path
	if !st.IsDir() {
		dir, err = os.MkdirTemp(tmp, "charm-")
		if err != nil {
			return nil, err
		}
		if err := unzip(path, dir); err != nil {
			return nil, fmt.Errorf("unpacking %s: %w", path, err)
		}
	}
	dst, err := os.Stat(filepath.Join(dir, "dispatch"))
	if err != nil {
		return nil, fmt.Errorf("charm %s: %w", path, err)
	}
	if dst.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("charm %s: dispatch is not executable (mode %s)", path, dst.Mode())
	}
	c := &Charm{Dir: dir}
	if err := c.readYAML(); err != nil {
		return nil, fmt.Errorf("charm %s: %w", path, err)
	}
	return c, nil
}

// unzip extracts an archive keeping the stored unix modes (charmcraft and zip -X store them,
// and Juju applies them; juju-contract §6). Entries escaping dir are refused.
func unzip(archive, dir string) error {
	r, err := zip.OpenReader(archive)
	if err != nil {
		return err
	}
	defer r.Close()
	for _, f := range r.File {
		name := filepath.Clean(f.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q escapes the charm directory", f.Name)
		}
		target := filepath.Join(dir, name)
		if f.FileInfo().IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		mode := f.Mode().Perm()
		if mode == 0 {
			mode = 0o644
		}
		if err := extract(f, target, mode); err != nil {
			return err
		}
	}
	return nil
}

func extract(f *zip.File, target string, mode os.FileMode) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

type metadataYAML struct {
	Name          string                                `yaml:"name"`
	Peers         map[string]struct{ Interface string } `yaml:"peers"`
	Provides      map[string]struct{ Interface string } `yaml:"provides"`
	Requires      map[string]struct{ Interface string } `yaml:"requires"`
	ExtraBindings map[string]any                        `yaml:"extra-bindings"`
}

type configYAML struct {
	Options map[string]struct {
		Type        string `yaml:"type"`
		Default     any    `yaml:"default"`
		Description string `yaml:"description"`
	} `yaml:"options"`
}

func (c *Charm) readYAML() error {
	var md metadataYAML
	if err := readYAMLFile(filepath.Join(c.Dir, "metadata.yaml"), &md, true); err != nil {
		return err
	}
	if md.Name == "" {
		return errors.New("metadata.yaml has no name")
	}
	c.Name = md.Name
	endpoints := func(in map[string]struct{ Interface string }) map[string]string {
		out := map[string]string{}
		for k, v := range in {
			out[k] = v.Interface
		}
		return out
	}
	c.Meta = jujutest.AppMeta{
		Peers: endpoints(md.Peers), Provides: endpoints(md.Provides), Requires: endpoints(md.Requires),
		Options: map[string]jujutest.Option{},
	}
	for k := range md.ExtraBindings {
		c.Meta.ExtraBindings = append(c.Meta.ExtraBindings, k)
	}
	sort.Strings(c.Meta.ExtraBindings)
	var cfg configYAML
	if err := readYAMLFile(filepath.Join(c.Dir, "config.yaml"), &cfg, false); err != nil {
		return err
	}
	for k, o := range cfg.Options {
		c.Meta.Options[k] = jujutest.Option{Type: o.Type, Default: o.Default, Description: o.Description}
	}
	var actions map[string]any
	if err := readYAMLFile(filepath.Join(c.Dir, "actions.yaml"), &actions, false); err != nil {
		return err
	}
	for k := range actions {
		c.Actions = append(c.Actions, k)
	}
	sort.Strings(c.Actions)
	return nil
}

func readYAMLFile(path string, v any, required bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		return fmt.Errorf("parsing %s: %w", path, err)
	}
	return nil
}

// install copies the charm into a machine's root at dir (a path inside the container). The copy
// goes to a sibling directory that is then renamed over dir, so a hook never sees half a charm —
// the same swap a refresh needs.
func (c *Charm) install(m *Machine, dir string) error {
	hostDir := filepath.Join(m.Root, dir)
	if err := os.MkdirAll(filepath.Dir(hostDir), 0o755); err != nil {
		return err
	}
	next, old := hostDir+".new", hostDir+".old"
	os.RemoveAll(next)
	os.RemoveAll(old)
	if out, err := exec.Command("cp", "-a", c.Dir, next).CombinedOutput(); err != nil {
		return fmt.Errorf("copying charm into %s: %v: %s", m.Name, err, out)
	}
	if _, err := os.Stat(hostDir); err == nil {
		if err := os.Rename(hostDir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(next, hostDir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}
