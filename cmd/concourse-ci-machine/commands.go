package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/hooks"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/storage"
)

func newRootCmd(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "concourse-ci-machine",
		Short:         "Juju machine charm for Concourse CI (run as dispatch by Juju)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(
		&cobra.Command{
			Use:   "version",
			Short: "Print the charm's version",
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintln(stdout, version)
			},
		},
		newDispatchCmd(getenv, stderr),
		newRenderCmd(stdout),
		newStorageCmd(stdout, stderr),
		newOCIHookCmd(os.Stdin),
	)
	return root
}

// pathFlags lets the operator (and tests) move every path the charm writes under a prefix; Juju
// runs dispatch without arguments, so on a unit the real paths are used.
type pathFlags struct{ prefix string }

func (p *pathFlags) paths() hooks.Paths {
	d := hooks.DefaultPaths()
	if p.prefix == "" {
		return d
	}
	j := func(s string) string { return filepath.Join(p.prefix, s) }
	return hooks.Paths{Root: j(d.Root), ConfigDir: j(d.ConfigDir), WorkDir: j(d.WorkDir), StateDir: j(d.StateDir), SystemdDir: j(d.SystemdDir)}
}

func newDispatchCmd(getenv func(string) string, stderr io.Writer) *cobra.Command {
	var pf pathFlags
	var githubAPI, runnerKind string
	var keyBits int
	cmd := &cobra.Command{
		Use:   "dispatch",
		Short: "Handle the hook or action named by JUJU_DISPATCH_PATH (what Juju runs)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := juju.ParseEnv(getenv, os.Args[0])
			var runner juju.Runner = juju.ExecRunner{}
			if runnerKind != "exec" {
				// Talk to the unit agent's socket directly, falling back to the tools.
				dir, err := os.Getwd()
				if err != nil {
					return err
				}
				runner = juju.NewRPCRunner(env, dir, runner)
			}
			client := juju.NewClient(runner, env)
			deps := realDeps(env, pf.paths(), stderr)
			deps.Juju = client
			if githubAPI != "" {
				deps.GitHubAPI = githubAPI
			}
			if keyBits != 0 {
				deps.KeyBits = keyBits
			}
			return hooks.Run(cmd.Context(), deps)
		},
	}
	cmd.Flags().StringVar(&pf.prefix, "paths-prefix", "", "move every path the charm writes under this directory (local runs and tests)")
	cmd.Flags().StringVar(&githubAPI, "github-api", "", "GitHub API base URL for the latest-release lookup")
	cmd.Flags().IntVar(&keyBits, "key-bits", 0, "RSA key size (default 4096)")
	cmd.Flags().StringVar(&runnerKind, "hook-tools", "rpc", "how hook tools are called: rpc (the agent socket, falling back to exec) or exec")
	return cmd
}

// realDeps builds the production dependencies of a hook from the environment Juju gave it.
func realDeps(env juju.Env, paths hooks.Paths, stderr io.Writer) hooks.Deps {
	client := &http.Client{Transport: &http.Transport{
		Proxy:                 env.ProxyFunc(),
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       30 * time.Second,
	}}
	systemd := concourse.Systemd{}
	return hooks.Deps{
		Env:      env,
		Paths:    paths,
		GOARCH:   runtime.GOARCH,
		HTTP:     client,
		Services: systemd,
		NewStore: func(root, unit string, progress func(done, total int64)) hooks.Store {
			return storage.New(storage.Options{
				Root:        root,
				Unit:        unit,
				HTTPClient:  client,
				Logger:      prefixLogger{w: stderr}, // storage lines already name the unit
				Progress:    progress,
				StripPrefix: "concourse/",
				Retry:       storage.RetryPolicy{Attempts: 5, Initial: time.Second, Max: 20 * time.Second, Total: 20 * time.Minute},
				// A release must run and report its version in staging, before it can become current.
				Probe: func(ctx context.Context, version, dir string) error {
					return concourse.ProbeRelease(ctx, version, dir, concourse.DefaultProbeTimeout)
				},
			})
		},
		NewMigrator: func(binary string, env []string) hooks.Migrator {
			return &concourse.Migrator{Binary: binary, Env: env}
		},
		CheckDB:   concourse.CheckDB,
		PrepareDB: concourse.PrepareRoleModel,
		// check-status reads the schema from migrations_history, no binary needed.
		SchemaVersion: concourse.SchemaVersion,
		WebInfo: func(ctx context.Context, base string) (string, error) {
			local, err := hooks.LocalWebClient(paths, base, 2*time.Second) // https: trusts tls-certificate only
			if err != nil {
				return "", err
			}
			info, err := concourse.Info(ctx, local, base)
			return info.Version, err
		},
		RetireWorker: func(ctx context.Context, base, user, password, worker string) (bool, error) {
			local, err := hooks.LocalWebClient(paths, base, 10*time.Second)
			if err != nil {
				return false, err
			}
			token, err := concourse.PasswordToken(ctx, local, base, user, password)
			if err != nil {
				return false, fmt.Errorf("logging in to %s as %s: %w", base, user, err)
			}
			return concourse.RetireWorker(ctx, local, base, token, worker)
		},
		ProbeVersion: probeVersion,
		EnsureUser: func(name string) (int, int, error) {
			if err := concourse.EnsureSystemUser(context.Background(), name, "/var/lib/concourse-web", nil); err != nil {
				return 0, 0, err
			}
			return concourse.LookupIDs(name)
		},
		Stderr:      stderr,
		InstallWait: 2 * time.Minute,
		Upgrade:     hooks.RealUpgradeDeps(paths),
	}
}

type prefixLogger struct {
	w      io.Writer
	prefix string
}

func (l prefixLogger) Printf(format string, args ...any) {
	fmt.Fprintf(l.w, l.prefix+format+"\n", args...)
}

// probeVersion runs `<binary> --version` with concourse's bounded probe.
func probeVersion(ctx context.Context, binary string) (string, error) {
	return concourse.ProbeVersion(ctx, binary, concourse.DefaultProbeTimeout)
}

func newRenderCmd(stdout io.Writer) *cobra.Command {
	var pf pathFlags
	var kvs, tsaHosts []string
	in := hooks.RenderInput{}
	cmd := &cobra.Command{
		Use:   "render",
		Short: "Print the files and units the charm would write for a configuration and role, touching nothing",
		Example: `  concourse-ci-machine render --config mode=auto --leader --address 10.0.0.5 --config version=7.14.3
  concourse-ci-machine render --config mode=worker --config tag=gpu,big --tsa-host 10.0.0.5:2222`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in.Config = map[string]any{}
			for _, kv := range kvs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--config %q: expected key=value", kv)
				}
				in.Config[k] = v
			}
			in.Paths = pf.paths()
			in.TSAHosts = tsaHosts
			return hooks.Render(stdout, in)
		},
	}
	cmd.Flags().StringArrayVar(&kvs, "config", nil, "charm option as key=value (repeatable)")
	cmd.Flags().BoolVar(&in.Leader, "leader", false, "render as the leader unit")
	cmd.Flags().StringVar(&in.Unit, "unit", "concourse-ci-machine/0", "unit name")
	cmd.Flags().StringVar(&in.Address, "address", "10.0.0.5", "unit address")
	cmd.Flags().StringArrayVar(&tsaHosts, "tsa-host", nil, "TSA host:port of a web unit (worker role)")
	cmd.Flags().StringVar(&in.Version, "version", "", "installed Concourse version")
	cmd.Flags().StringVar(&in.DBHost, "db-host", "10.0.0.9", "PostgreSQL host")
	cmd.Flags().IntVar(&in.DBPort, "db-port", 5432, "PostgreSQL port")
	cmd.Flags().StringVar(&pf.prefix, "paths-prefix", "", "show paths under this prefix")
	return cmd
}

func newStorageCmd(stdout, stderr io.Writer) *cobra.Command {
	var root string
	cmd := &cobra.Command{Use: "storage", Short: "Inspect the Concourse install root (shared or local)"}
	cmd.PersistentFlags().StringVar(&root, "root", hooks.DefaultPaths().Root, "install root")
	open := func() *storage.Store {
		unit := os.Getenv("JUJU_UNIT_NAME")
		if unit == "" {
			unit = "operator"
		}
		return storage.New(storage.Options{Root: root, Unit: unit, Logger: prefixLogger{w: stderr}, StripPrefix: "concourse/"})
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Installed version, versions on disk, lock holder, markers, per-unit records, disk use",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := open().Status()
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, st.String())
			return nil // disagreements are shown; verify is the command that fails on them
		},
	}
	var full bool
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Check the installed release against its manifest (sha256 of every file with --full)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := open()
			v, err := s.Installed()
			if err != nil {
				return err
			}
			if v == "" {
				return fmt.Errorf("no Concourse release is installed in %s", root)
			}
			if full {
				err = s.VerifyFull()
			} else {
				err = s.VerifyQuick(func(binary string) error {
					got, err := probeVersion(cmd.Context(), binary)
					if err == nil && got != v {
						err = fmt.Errorf("%s --version says %q, want %q", binary, got, v)
					}
					return err
				})
			}
			if err != nil {
				return err
			}
			// The release can be intact while the root around it disagrees (a kill late in an
			// install): then bin/concourse or .installed_version is wrong for whoever reads them.
			problems, err := s.Problems()
			if err != nil {
				return err
			}
			if len(problems) > 0 {
				return fmt.Errorf("Concourse %s in %s is intact, but the install root disagrees with current:\n  %s\nthe installing unit repairs this at its next hook (or run any hook there)",
					v, root, strings.Join(problems, "\n  "))
			}
			fmt.Fprintf(stdout, "Concourse %s in %s: OK\n", v, root)
			return nil
		},
	}
	verify.Flags().BoolVar(&full, "full", true, "hash every file (false: presence, sizes and --version only)")
	cmd.AddCommand(status, verify)
	return cmd
}
