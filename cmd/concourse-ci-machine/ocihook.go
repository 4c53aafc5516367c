package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/concourse"
)

// newOCIHookCmd is the prestart hook the worker's containerd runtime runs for every container
// (internal/hooks/gpu.go writes its hooks-dir file). Hidden: operators never run it.
func newOCIHookCmd(stdin io.Reader) *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "oci-hook --config <task-hook.json>",
		Short:  "Prestart OCI hook: GPUs and task folders into a container (run by the worker)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(config)
			if err != nil {
				return fmt.Errorf("reading the task hook configuration: %w", err)
			}
			cfg, err := concourse.ParseTaskHookConfig(b)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the hook's own binary: %w", err)
			}
			return concourse.RunTaskHook(cmd.Context(), cfg, stdin, self, "/proc", execRunner{})
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the hook's configuration (task-hook.json)")
	_ = cmd.MarkFlagRequired("config")
	cmd.AddCommand(&cobra.Command{
		Use:    "mount",
		Short:  "Inner half of the hook, run inside the container's mount namespace",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var plan concourse.MountPlan
			if err := json.NewDecoder(stdin).Decode(&plan); err != nil {
				return fmt.Errorf("reading the mount plan: %w", err)
			}
			return concourse.ApplyMountPlan(plan)
		},
	})
	return cmd
}

// execRunner runs the hook's programs; their output goes into the error (runc shows it).
type execRunner struct{}

func (execRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) error {
	c := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
