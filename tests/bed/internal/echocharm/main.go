// Command echocharm is a tiny charm for the bed's own tests. It exercises the whole hook path —
// container, tools symlinks, unix socket, controller, model, commit, events — with a few hook
// tools, and records what it saw under /var/lib/echo so tests can check it from the host.
//
//   - every hook: appends "<hook> <remote unit>" to /var/lib/echo/hooks.log, sets status active
//     "<hook> ok" and logs with juju-log.
//   - config "fail-once": the hook of that name fails the first time (exit 1, after a
//     relation-set that must be discarded), then succeeds on the retry.
//   - config-changed: publishes the "greeting" option in its peer unit databag.
//   - peers-relation-changed: writes the remote unit's greeting to /var/lib/echo/greeting-<unit>.
//   - db-relation-changed: writes the remote application's "endpoints" to /var/lib/echo/endpoints.
//   - action "echo": action-set echo=<message param>.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const stateDir = "/var/lib/echo"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "echocharm:", err)
		os.Exit(1)
	}
}

func tool(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return "", fmt.Errorf("%s %q: %v: %s", name, args, err, ee.Stderr)
	}
	return strings.TrimSpace(string(out)), err
}

func run() error {
	dispatch := os.Getenv("JUJU_DISPATCH_PATH")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return err
	}
	if action, ok := strings.CutPrefix(dispatch, "actions/"); ok {
		if action != "echo" {
			return fmt.Errorf("unknown action %q", action)
		}
		msg, err := tool("action-get", "message", "--format=json")
		if err != nil {
			return err
		}
		var s string
		json.Unmarshal([]byte(msg), &s)
		_, err = tool("action-set", "echo="+s)
		return err
	}
	hook := strings.TrimPrefix(dispatch, "hooks/")
	remote := os.Getenv("JUJU_REMOTE_UNIT")
	f, err := os.OpenFile(filepath.Join(stateDir, "hooks.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "%s %s\n", hook, remote)
	f.Close()
	if _, err := tool("juju-log", "--", "running "+hook); err != nil {
		return err
	}
	cfg, err := tool("config-get", "--format=json")
	if err != nil {
		return err
	}
	var config map[string]any
	if err := json.Unmarshal([]byte(cfg), &config); err != nil {
		return fmt.Errorf("parsing config %q: %w", cfg, err)
	}
	marker := filepath.Join(stateDir, "failed-"+hook)
	if config["fail-once"] == hook {
		if _, err := os.Stat(marker); os.IsNotExist(err) {
			os.WriteFile(marker, nil, 0o644)
			// Buffered by the unit agent and dropped because the hook fails (contract §2.4).
			if ids, _ := tool("relation-ids", "peers", "--format=json"); ids != "[]" {
				var list []string
				json.Unmarshal([]byte(ids), &list)
				tool("relation-set", "-r", list[0], "discarded=yes")
			}
			tool("status-set", "maintenance", "failing "+hook+" once")
			return fmt.Errorf("failing %s once, as configured", hook)
		}
	}
	switch {
	case hook == "config-changed":
		ids, err := tool("relation-ids", "peers", "--format=json")
		if err != nil {
			return err
		}
		var list []string
		json.Unmarshal([]byte(ids), &list)
		for _, id := range list {
			g, _ := config["greeting"].(string)
			if _, err := tool("relation-set", "-r", id, "greeting="+g); err != nil {
				return err
			}
		}
	case hook == "peers-relation-changed" && remote != "":
		g, err := tool("relation-get", "--format=json", "greeting", remote)
		if err != nil {
			return err
		}
		var s *string
		json.Unmarshal([]byte(g), &s)
		if s != nil {
			name := filepath.Join(stateDir, "greeting-"+strings.ReplaceAll(remote, "/", "-"))
			if err := os.WriteFile(name, []byte(*s), 0o644); err != nil {
				return err
			}
		}
	case hook == "db-relation-changed":
		app := os.Getenv("JUJU_REMOTE_APP")
		e, err := tool("relation-get", "--format=json", "--app", "endpoints", app)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(stateDir, "endpoints"), []byte(e), 0o644); err != nil {
			return err
		}
	}
	_, err = tool("status-set", "active", hook+" ok")
	return err
}
