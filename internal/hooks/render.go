package hooks

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// RenderInput is what `concourse-ci-machine render` knows: a configuration and a situation, no
// Juju and no machine.
type RenderInput struct {
	Config   map[string]any
	Leader   bool
	Unit     string // e.g. concourse-ci-machine/0
	Address  string // unit address, standing for every binding's (render knows no Juju)
	TSAHosts []string
	Version  string // installed version, for the binary path
	Paths    Paths
	DBHost   string
	DBPort   int
}

// Render prints the files a unit would write for the given configuration and role, without
// touching the machine, using the same functions as the hooks.
func Render(w io.Writer, in RenderInput) error {
	cfg, err := parseConfig(in.Config)
	if err != nil {
		return err
	}
	cfg.hashPassword = placeholderHash // render knows no password: it shows where a hash goes
	role := decideRole(cfg.Mode, in.Leader)
	version := in.Version
	if version == "" {
		version = cfg.Version
	}
	if version == "" {
		version = "<version>"
	}
	binary := filepath.Join(in.Paths.Root, "versions", version+"-<id>", "bin", "concourse")
	fmt.Fprintf(w, "# role: %s (mode=%s, leader=%t), shared-storage=%s\n", role, cfg.Mode, in.Leader, cfg.SharedStorage)
	if role.Web {
		db := concourse.DBConfig{Host: in.DBHost, Port: in.DBPort, User: "relation-user", Password: "from-the-secret-user-secret", Database: databaseName}
		vars, _, unit, err := renderWeb(cfg, in.Paths, in.Address, binary, "from-the-admin-password-secret", db)
		if err != nil {
			return err
		}
		section(w, filepath.Join(in.Paths.ConfigDir, fileWebEnv), "0640 root:concourse", concourse.RenderEnv(redactSecrets(vars, cfg.Opts)))
		for _, f := range webOptionFiles(cfg.Opts, in.Paths) {
			section(w, f.Path, "0644", f.Data)
		}
		_, vaultFiles, _, err := webVault(cfg, in.Paths) // checked by renderWeb above
		if err != nil {
			return err
		}
		for _, f := range vaultFiles {
			if f.Secret {
				section(w, f.Path, "0640 root:concourse", []byte("<a secret, not shown>\n"))
				continue
			}
			section(w, f.Path, "0644", f.Content)
		}
		for _, f := range webTLSFiles(cfg, in.Paths, 0) {
			if f.Mode == 0o640 {
				section(w, f.Path, "0640 root:concourse", []byte("<the tls-key, not shown>\n"))
			} else {
				section(w, f.Path, "0644", f.Data)
			}
		}
		section(w, filepath.Join(in.Paths.SystemdDir, webService), "0644", unit)
		ports := fmt.Sprintf("%d/tcp (web), %d/tcp (TSA)", cfg.WebPort, tsaPort)
		if t := tlsOf(cfg); t.On {
			ports = fmt.Sprintf("%d/tcp (web, HTTPS), %d/tcp (HTTP, redirects to HTTPS), %d/tcp (TSA)", cfg.WebPort, t.RedirectPort, tsaPort)
		}
		if cfg.EnableMetrics {
			ports += fmt.Sprintf(", %d/tcp (metrics)", metricsPort)
		}
		fmt.Fprintf(w, "# ports opened: %s\n\n", ports)
	}
	if role.Worker {
		hosts := in.TSAHosts
		if role.Web {
			hosts = append(hosts, tsaHost(in.Address))
		}
		if len(hosts) == 0 {
			hosts = []string{"<web address>:2222"}
		}
		env, unit, err := renderWorker(cfg, in.Paths, in.Unit, binary, hosts, taskHook{})
		if err != nil {
			return err
		}
		section(w, filepath.Join(in.Paths.ConfigDir, fileWorkerEnv), "0600 root:root", env)
		section(w, filepath.Join(in.Paths.SystemdDir, workerSvc), "0644", unit)
	}
	return nil
}

// redactSecrets hides what render would otherwise print of the secret options' values: render's
// output goes to terminals, tickets and pastebins, so a variable carrying a secret shows which
// option it comes from instead. Juju secret URIs are not secrets and are shown as they are.
func redactSecrets(vars []concourse.EnvVar, opts map[string]string) []concourse.EnvVar {
	out := make([]concourse.EnvVar, len(vars))
	for i, v := range vars {
		out[i] = v
		for _, o := range optionTable() {
			val := opts[o.Name]
			if !o.Secret || val == "" || secretURIRE.MatchString(val) || strings.HasPrefix(v.Value, "<content of secret:") {
				continue
			}
			if v.Name == o.Env || (len(val) >= 4 && strings.Contains(v.Value, val)) {
				out[i].Value = "<" + o.Name + ", not shown>"
				break
			}
		}
	}
	return out
}

func section(w io.Writer, path, mode string, body []byte) {
	fmt.Fprintf(w, "# ---- %s (%s)\n%s\n", path, mode, body)
}
