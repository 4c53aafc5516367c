package juju_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/juju"
)

// call is one hook-tool invocation as the runner saw it. key#file=PATH arguments are rewritten
// to key#file=<file> and the file's content recorded in files, because the path is random.
type call struct {
	tool  string
	args  []string
	stdin string
	files map[string]string
}

// reply is what the fake tool answers.
type reply struct {
	stdout string
	code   int
	stderr string
}

// recordingRunner records calls and answers each with the next reply (the last one repeats).
type recordingRunner struct {
	t       *testing.T
	replies []reply
	calls   []call
}

func (r *recordingRunner) Run(_ context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	c := call{tool: tool, stdin: string(stdin)}
	for _, a := range args {
		if k, p, ok := strings.Cut(a, "#file="); ok {
			fi, err := os.Stat(p)
			if err != nil {
				r.t.Errorf("%s: content file %s: %v", tool, p, err)
			} else if perm := fi.Mode().Perm(); perm != 0o600 {
				r.t.Errorf("%s: content file %s has mode %o, want 600", tool, p, perm)
			}
			b, _ := os.ReadFile(p)
			if c.files == nil {
				c.files = map[string]string{}
			}
			c.files[k] = string(b)
			a = k + "#file=<file>"
		}
		c.args = append(c.args, a)
	}
	r.calls = append(r.calls, c)
	rep := reply{}
	if len(r.replies) > 0 {
		rep = r.replies[0]
		if len(r.replies) > 1 {
			r.replies = r.replies[1:]
		}
	}
	if rep.code != 0 {
		return []byte(rep.stdout), &juju.ToolError{Tool: tool, Args: args, ExitCode: rep.code, Stderr: rep.stderr}
	}
	return []byte(rep.stdout), nil
}

func newClient(t *testing.T, replies ...reply) (*juju.Client, *recordingRunner) {
	r := &recordingRunner{t: t, replies: replies}
	env := juju.ParseEnv(mapEnv(map[string]string{"JUJU_UNIT_NAME": "concourse-ci-machine/10"}), "")
	return juju.NewClient(r, env), r
}

func ok(stdout string) reply { return reply{stdout: stdout} }

type clientCase struct {
	name    string
	replies []reply
	do      func(context.Context, *juju.Client) (any, error)
	want    []call // exact calls, in order
	wantOut any    // compared with reflect.DeepEqual when wantErr is nil
	wantErr error  // a sentinel the error must match, or errAny for "any error"
}

var errAny = errors.New("any error")

func runClientCases(t *testing.T, cases []clientCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, r := newClient(t, tc.replies...)
			out, err := tc.do(t.Context(), c)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != nil && err == nil:
				t.Fatalf("want error matching %v, got nil (out %#v)", tc.wantErr, out)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %q does not match %v", err, tc.wantErr)
			case tc.wantErr == nil && !reflect.DeepEqual(out, tc.wantOut):
				t.Errorf("result: want %#v, got %#v", tc.wantOut, out)
			}
			if !reflect.DeepEqual(r.calls, tc.want) && !(len(r.calls) == 0 && len(tc.want) == 0) {
				t.Errorf("calls:\nwant %#v\n got %#v", tc.want, r.calls)
			}
		})
	}
}

func TestClientLeadershipConfigStatus(t *testing.T) {
	t.Parallel()
	runClientCases(t, []clientCase{
		{
			name:    "is-leader/true",
			replies: []reply{ok("true\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.IsLeader(ctx) },
			want:    []call{{tool: "is-leader", args: []string{"--format=json"}}},
			wantOut: true,
		},
		{
			name:    "is-leader/unknown",
			replies: []reply{{code: 1, stderr: "ERROR leadership status unknown\n"}},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.IsLeader(ctx) },
			want:    []call{{tool: "is-leader", args: []string{"--format=json"}}},
			wantErr: errAny,
		},
		{
			name:    "config/types",
			replies: []reply{ok(`{"mode":"auto","web-port":8080,"big":9007199254740993,"ratio":0.5,"debug":false,"version":null}` + "\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.Config(ctx) },
			want:    []call{{tool: "config-get", args: []string{"--all", "--format=json"}}},
			wantOut: map[string]any{
				"mode": "auto", "web-port": json.Number("8080"), "big": json.Number("9007199254740993"),
				"ratio": json.Number("0.5"), "debug": false, "version": nil,
			},
		},
		{
			name:    "config/null",
			replies: []reply{ok("null\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.Config(ctx) },
			want:    []call{{tool: "config-get", args: []string{"--all", "--format=json"}}},
			wantOut: map[string]any{},
		},
		{
			name:    "config/garbage",
			replies: []reply{ok("mode: auto\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.Config(ctx) },
			want:    []call{{tool: "config-get", args: []string{"--all", "--format=json"}}},
			wantErr: errAny,
		},
		{
			name: "status/unit",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetStatus(ctx, juju.Status{Name: juju.StatusBlocked, Message: "-add a relation to postgresql"})
			},
			want: []call{{tool: "status-set", args: []string{"--application=false", "blocked", "--", "-add a relation to postgresql"}}},
		},
		{
			name: "status/app",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetAppStatus(ctx, juju.Status{Name: juju.StatusActive})
			},
			want: []call{{tool: "status-set", args: []string{"--application=true", "active", "--", ""}}},
		},
		{
			name:    "status/app-not-leader",
			replies: []reply{{code: 1, stderr: "ERROR setting application status: this unit is not the leader\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetAppStatus(ctx, juju.Status{Name: juju.StatusWaiting, Message: "waiting for workers"})
			},
			want:    []call{{tool: "status-set", args: []string{"--application=true", "waiting", "--", "waiting for workers"}}},
			wantErr: juju.ErrNotLeader,
		},
		{
			name: "status/invalid-name-not-sent",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetStatus(ctx, juju.Status{Name: "error"})
			},
			wantErr: errAny,
		},
		{
			name: "app-version",
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return nil, c.SetAppVersion(ctx, "7.14.3") },
			want: []call{{tool: "application-version-set", args: []string{"--", "7.14.3"}}},
		},
		{
			name: "log",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.Log(ctx, juju.LogWarning, "--disk almost full")
			},
			want: []call{{tool: "juju-log", args: []string{"--log-level", "WARNING", "--", "--disk almost full"}}},
		},
		{
			name:    "resource-get",
			replies: []reply{ok("/var/lib/juju/agents/unit-concourse-ci-machine-10/resources/concourse/concourse.tgz\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.ResourceGet(ctx, "concourse") },
			want:    []call{{tool: "resource-get", args: []string{"concourse"}}},
			wantOut: "/var/lib/juju/agents/unit-concourse-ci-machine-10/resources/concourse/concourse.tgz",
		},
		{
			name:    "resource-get/missing",
			replies: []reply{{code: 1, stderr: "ERROR could not download resource: resource \"concourse\" not found\n"}},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.ResourceGet(ctx, "concourse") },
			want:    []call{{tool: "resource-get", args: []string{"concourse"}}},
			wantErr: errAny,
		},
	})
}

func TestClientLogSplitsLongMessages(t *testing.T) {
	t.Parallel()
	c, r := newClient(t)
	// 131071 bytes fit in one argv string; put a 3-byte rune across that boundary.
	msg := strings.Repeat("a", 131070) + "€" + "tail"
	if err := c.Log(t.Context(), juju.LogInfo, msg); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 2 {
		t.Fatalf("want 2 juju-log calls, got %d", len(r.calls))
	}
	first, second := r.calls[0].args[3], r.calls[1].args[3]
	if first != strings.Repeat("a", 131070) || second != "€tail" {
		t.Errorf("split at the wrong place: first %d bytes, second %q", len(first), second)
	}
}

func TestClientRelations(t *testing.T) {
	t.Parallel()
	runClientCases(t, []clientCase{
		{
			name:    "ids",
			replies: []reply{ok(`["database:5","database:12"]` + "\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationIDs(ctx, "database") },
			want:    []call{{tool: "relation-ids", args: []string{"database", "--format=json"}}},
			wantOut: []int{5, 12},
		},
		{
			name:    "ids/none",
			replies: []reply{ok("[]\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationIDs(ctx, "database") },
			want:    []call{{tool: "relation-ids", args: []string{"database", "--format=json"}}},
			wantOut: []int{},
		},
		{
			name:    "ids/bad",
			replies: []reply{ok(`["database:x"]`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationIDs(ctx, "database") },
			want:    []call{{tool: "relation-ids", args: []string{"database", "--format=json"}}},
			wantErr: errAny,
		},
		{
			name:    "units",
			replies: []reply{ok(`["concourse-ci-machine/0","concourse-ci-machine/10"]`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationUnits(ctx, 1) },
			want:    []call{{tool: "relation-list", args: []string{"--format=json", "-r", "1"}}},
			wantOut: []string{"concourse-ci-machine/0", "concourse-ci-machine/10"},
		},
		{
			name:    "units/null",
			replies: []reply{ok("null\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationUnits(ctx, 1) },
			want:    []call{{tool: "relation-list", args: []string{"--format=json", "-r", "1"}}},
			wantOut: []string{},
		},
		{
			name:    "units/relation-gone",
			replies: []reply{{code: 2, stderr: "ERROR invalid value \"5\" for option -r: relation not found\n"}},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationUnits(ctx, 5) },
			want:    []call{{tool: "relation-list", args: []string{"--format=json", "-r", "5"}}},
			wantErr: juju.ErrRelationNotFound,
		},
		{
			name:    "app",
			replies: []reply{ok(`"postgresql"` + "\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.RelationApp(ctx, 5) },
			want:    []call{{tool: "relation-list", args: []string{"--format=json", "--app", "-r", "5"}}},
			wantOut: "postgresql",
		},
		{
			name:    "unit-data",
			replies: []reply{ok(`{"egress-subnets":"10.1.2.3/32","private-address":"10.1.2.3"}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.RelationData(ctx, 1, "concourse-ci-machine/0")
			},
			want:    []call{{tool: "relation-get", args: []string{"--format=json", "-r", "1", "-", "concourse-ci-machine/0"}}},
			wantOut: map[string]string{"egress-subnets": "10.1.2.3/32", "private-address": "10.1.2.3"},
		},
		{
			name:    "app-data/null",
			replies: []reply{ok("null\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.AppRelationData(ctx, 5, "postgresql") },
			want:    []call{{tool: "relation-get", args: []string{"--format=json", "-r", "5", "--app", "-", "postgresql"}}},
			wantOut: map[string]string{},
		},
		{
			name:    "app-data/denied",
			replies: []reply{{code: 1, stderr: "ERROR permission denied\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.AppRelationData(ctx, 5, "concourse-ci-machine")
			},
			want:    []call{{tool: "relation-get", args: []string{"--format=json", "-r", "5", "--app", "-", "concourse-ci-machine"}}},
			wantErr: juju.ErrPermissionDenied,
		},
		{
			name: "set-unit",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetRelationData(ctx, 1, map[string]string{"worker-key": "ssh-ed25519 AAAA", "stale": ""})
			},
			want: []call{{tool: "relation-set", args: []string{"-r", "1", "--file", "-"},
				stdin: `{"stale":"","worker-key":"ssh-ed25519 AAAA"}`}},
		},
		{
			name:    "set-app/not-leader",
			replies: []reply{{code: 1, stderr: "ERROR cannot write relation settings\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetAppRelationData(ctx, 5, map[string]string{"database": "concourse"})
			},
			want: []call{{tool: "relation-set", args: []string{"-r", "5", "--app", "--file", "-"},
				stdin: `{"database":"concourse"}`}},
			wantErr: juju.ErrNotLeader,
		},
		{
			name: "set/empty-is-no-op",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetAppRelationData(ctx, 5, nil)
			},
		},
	})
}

func TestClientPortsNetworkState(t *testing.T) {
	t.Parallel()
	runClientCases(t, []clientCase{
		{
			name: "open",
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return nil, c.OpenPort(ctx, juju.TCP(8080)) },
			want: []call{{tool: "open-port", args: []string{"8080/tcp"}}},
		},
		{
			name: "close-range",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.ClosePort(ctx, juju.Port{From: 7777, To: 7799, Protocol: "udp"})
			},
			want: []call{{tool: "close-port", args: []string{"7777-7799/udp"}}},
		},
		{
			name:    "opened",
			replies: []reply{ok(`["80/tcp","8000-8100/udp","icmp"]`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.OpenedPorts(ctx) },
			want:    []call{{tool: "opened-ports", args: []string{"--format=json"}}},
			wantOut: []juju.Port{{80, 80, "tcp"}, {8000, 8100, "udp"}, {0, 0, "icmp"}},
		},
		{
			name:    "opened/null",
			replies: []reply{ok("null")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.OpenedPorts(ctx) },
			want:    []call{{tool: "opened-ports", args: []string{"--format=json"}}},
			wantOut: []juju.Port{},
		},
		{
			name:    "private-address",
			replies: []reply{ok(`"10.20.30.40"`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.PrivateAddress(ctx) },
			want:    []call{{tool: "unit-get", args: []string{"--format=json", "private-address"}}},
			wantOut: "10.20.30.40",
		},
		{
			name: "network-get",
			replies: []reply{ok(`{"bind-addresses":[{"mac-address":"00:16:3e:aa:bb:cc","interface-name":"eth0",` +
				`"addresses":[{"hostname":"","value":"10.20.30.40","cidr":"10.20.30.0/24"}]}],` +
				`"egress-subnets":["10.20.30.40/32"],"ingress-addresses":["10.20.30.40"]}`)},
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return c.NetworkGet(ctx, "peers") },
			want: []call{{tool: "network-get", args: []string{"--format=json", "peers"}}},
			wantOut: juju.Network{
				BindAddresses: []juju.BindAddress{{MACAddress: "00:16:3e:aa:bb:cc", InterfaceName: "eth0",
					Addresses: []juju.Address{{Value: "10.20.30.40", CIDR: "10.20.30.0/24"}}}},
				EgressSubnets: []string{"10.20.30.40/32"}, IngressAddresses: []string{"10.20.30.40"},
			},
		},
		{
			name:    "network-get/old-address-key",
			replies: []reply{ok(`{"bind-addresses":[{"interface-name":"eth0","addresses":[{"address":"10.0.0.5","cidr":"10.0.0.0/24"}]}]}`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.NetworkGet(ctx, "web") },
			want:    []call{{tool: "network-get", args: []string{"--format=json", "web"}}},
			wantOut: juju.Network{BindAddresses: []juju.BindAddress{{InterfaceName: "eth0",
				Addresses: []juju.Address{{Value: "10.0.0.5", CIDR: "10.0.0.0/24"}}}}},
		},
		{
			// A cross-model relation: Juju answers for the relation's endpoint, with the public
			// address as ingress while the bound interface keeps the space address.
			name: "network-get/relation",
			replies: []reply{ok(`{"bind-addresses":[{"interface-name":"eth1","addresses":[{"value":"192.168.7.5","cidr":"192.168.7.0/24"}]}],` +
				`"egress-subnets":["203.0.113.5/32"],"ingress-addresses":["203.0.113.5","192.168.7.5"]}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				n, err := c.NetworkGetRelation(ctx, "tsa", 7)
				return n.Ingress(), err
			},
			want:    []call{{tool: "network-get", args: []string{"--format=json", "-r", "7", "tsa"}}},
			wantOut: "203.0.113.5",
		},
		{
			name:    "network-get/no-ingress-uses-bind-address",
			replies: []reply{ok(`{"bind-addresses":[{"interface-name":"eth0","addresses":[{"address":"10.0.0.5","cidr":"10.0.0.0/24"}]}],"ingress-addresses":[]}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				n, err := c.NetworkGet(ctx, "peers")
				return n.Ingress(), err
			},
			want:    []call{{tool: "network-get", args: []string{"--format=json", "peers"}}},
			wantOut: "10.0.0.5",
		},
		{
			name:    "network-get/unknown-binding",
			replies: []reply{{code: 1, stderr: "ERROR no network config found for binding \"monitoring\"\n"}},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.NetworkGet(ctx, "monitoring") },
			want:    []call{{tool: "network-get", args: []string{"--format=json", "monitoring"}}},
			wantErr: juju.ErrNoNetworkConfig,
		},
		{
			name:    "state-get",
			replies: []reply{ok(`"7.14.3"`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.StateGet(ctx, "started-version") },
			want:    []call{{tool: "state-get", args: []string{"--format=json", "started-version"}}},
			wantOut: "7.14.3",
		},
		{
			name:    "state-get/missing",
			replies: []reply{ok(`""` + "\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.StateGet(ctx, "nope") },
			want:    []call{{tool: "state-get", args: []string{"--format=json", "nope"}}},
			wantOut: "",
		},
		{
			name: "state-set",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.StateSet(ctx, map[string]string{"b": "2", "a": "1"})
			},
			want: []call{{tool: "state-set", args: []string{"--file", "-"}, stdin: `{"a":"1","b":"2"}`}},
		},
		{
			name: "state-delete",
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return nil, c.StateDelete(ctx, "a") },
			want: []call{{tool: "state-delete", args: []string{"a"}}},
		},
	})
}

func TestClientActions(t *testing.T) {
	t.Parallel()
	type params struct {
		Version string `json:"version"`
		Force   bool   `json:"force"`
	}
	runClientCases(t, []clientCase{
		{
			name:    "params",
			replies: []reply{ok(`{"version":"7.14.3","force":true}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				var p params
				err := c.ActionParams(ctx, &p)
				return p, err
			},
			want:    []call{{tool: "action-get", args: []string{"--format=json"}}},
			wantOut: params{Version: "7.14.3", Force: true},
		},
		{
			name:    "params/not-in-action",
			replies: []reply{{code: 1, stderr: "ERROR not running an action\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				var p params
				return nil, c.ActionParams(ctx, &p)
			},
			want:    []call{{tool: "action-get", args: []string{"--format=json"}}},
			wantErr: errAny,
		},
		{
			name: "results/sorted",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetActionResults(ctx, map[string]string{"version": "7.14.3", "backup.path": "/srv/b=1"})
			},
			want: []call{{tool: "action-set", args: []string{"backup.path=/srv/b=1", "version=7.14.3"}}},
		},
		{
			name: "results/reserved-key",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetActionResults(ctx, map[string]string{"stdout": "x"})
			},
			wantErr: errAny,
		},
		{
			name: "results/bad-key",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetActionResults(ctx, map[string]string{"Version": "x"})
			},
			wantErr: errAny,
		},
		{
			name: "fail",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.FailAction(ctx, "-no such version")
			},
			want: []call{{tool: "action-fail", args: []string{"--", "-no such version"}}},
		},
		{
			name: "log",
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return nil, c.ActionLog(ctx, "downloading") },
			want: []call{{tool: "action-log", args: []string{"--", "downloading"}}},
		},
	})
}

func TestClientSecrets(t *testing.T) {
	t.Parallel()
	const uri = "secret:d0k6v1r0ib7s73f4q1ug"
	runClientCases(t, []clientCase{
		{
			name:    "add",
			replies: []reply{ok(uri + "\n")},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.AddSecret(ctx, juju.SecretAddOptions{
					Label: "web-keys", Description: "TSA host key",
					Content: map[string]string{"tsa-host-key": "-----BEGIN OPENSSH PRIVATE KEY-----\n", "session-key": "s"},
				})
			},
			want: []call{{tool: "secret-add",
				args: []string{"--label", "web-keys", "--description", "TSA host key", "--owner", "application",
					"session-key#file=<file>", "tsa-host-key#file=<file>"},
				files: map[string]string{"session-key": "s", "tsa-host-key": "-----BEGIN OPENSSH PRIVATE KEY-----\n"}}},
			wantOut: uri,
		},
		{
			name:    "add/unit-owner-expiry",
			replies: []reply{ok(uri)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.AddSecret(ctx, juju.SecretAddOptions{
					Owner: juju.OwnerUnit, Rotate: "monthly",
					Expire:  time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
					Content: map[string]string{"password": "hunter2"},
				})
			},
			want: []call{{tool: "secret-add",
				args:  []string{"--expire", "2030-01-02T03:04:05Z", "--rotate", "monthly", "--owner", "unit", "password#file=<file>"},
				files: map[string]string{"password": "hunter2"}}},
			wantOut: uri,
		},
		{
			name: "add/bad-key",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.AddSecret(ctx, juju.SecretAddOptions{Content: map[string]string{"pw": "x"}})
			},
			wantErr: errAny,
		},
		{
			name:    "add/not-leader",
			replies: []reply{{code: 1, stderr: "ERROR this unit is not the leader\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.AddSecret(ctx, juju.SecretAddOptions{Content: map[string]string{"password": "x"}})
			},
			want: []call{{tool: "secret-add", args: []string{"--owner", "application", "password#file=<file>"},
				files: map[string]string{"password": "x"}}},
			wantErr: juju.ErrNotLeader,
		},
		{
			name:    "get/first-read-with-label",
			replies: []reply{ok(`{"username":"relation-5","password":"p","uris":"postgresql://relation-5:p@10.0.0.5:5432/concourse"}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Label: "database.5.user.secret"})
			},
			want: []call{{tool: "secret-get", args: []string{"--format=json", uri, "--label", "database.5.user.secret"}}},
			wantOut: map[string]string{"username": "relation-5", "password": "p",
				"uris": "postgresql://relation-5:p@10.0.0.5:5432/concourse"},
		},
		{
			name:    "get/refresh-by-label",
			replies: []reply{ok(`{"tls":"False","tls-ca":""}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{Label: "database.5.tls.secret", Refresh: true})
			},
			want:    []call{{tool: "secret-get", args: []string{"--format=json", "--label", "database.5.tls.secret", "--refresh"}}},
			wantOut: map[string]string{"tls": "False", "tls-ca": ""},
		},
		{
			name:    "get/peek",
			replies: []reply{ok(`{}`)},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Peek: true})
			},
			want:    []call{{tool: "secret-get", args: []string{"--format=json", uri, "--peek"}}},
			wantOut: map[string]string{},
		},
		{
			name: "get/refresh-and-peek",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{ID: uri, Peek: true, Refresh: true})
			},
			wantErr: errAny,
		},
		{
			name:    "get/not-found",
			replies: []reply{{code: 1, stderr: "ERROR secret \"d0k6v1r0ib7s73f4q1ug\" not found\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{ID: uri})
			},
			want:    []call{{tool: "secret-get", args: []string{"--format=json", uri}}},
			wantErr: juju.ErrSecretNotFound,
		},
		{
			name:    "get/not-granted",
			replies: []reply{{code: 1, stderr: "ERROR permission denied\n"}},
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return c.GetSecret(ctx, juju.SecretGetOptions{ID: uri})
			},
			want:    []call{{tool: "secret-get", args: []string{"--format=json", uri}}},
			wantErr: juju.ErrPermissionDenied,
		},
		{
			name: "set",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.SetSecret(ctx, uri, map[string]string{"password": "new"})
			},
			want: []call{{tool: "secret-set", args: []string{uri, "password#file=<file>"},
				files: map[string]string{"password": "new"}}},
		},
		{
			name: "grant/unit",
			do: func(ctx context.Context, c *juju.Client) (any, error) {
				return nil, c.GrantSecret(ctx, uri, 5, "postgresql/10")
			},
			want: []call{{tool: "secret-grant", args: []string{"--relation", "5", "--unit", "postgresql/10", uri}}},
		},
		{
			name: "grant/app",
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return nil, c.GrantSecret(ctx, uri, 5, "") },
			want: []call{{tool: "secret-grant", args: []string{"--relation", "5", uri}}},
		},
		{
			name:    "ids/null",
			replies: []reply{ok("null\n")},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.SecretIDs(ctx) },
			want:    []call{{tool: "secret-ids", args: []string{"--format=json"}}},
			wantOut: []string{},
		},
		{
			name:    "ids",
			replies: []reply{ok(`["d0k6v1r0ib7s73f4q1ug"]`)},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.SecretIDs(ctx) },
			want:    []call{{tool: "secret-ids", args: []string{"--format=json"}}},
			wantOut: []string{"d0k6v1r0ib7s73f4q1ug"},
		},
		{
			name: "info/by-label",
			replies: []reply{ok(`{"d0k6v1r0ib7s73f4q1ug":{"revision":3,"label":"web-keys","owner":"application",` +
				`"rotation":"monthly","expiry":"2030-01-02T03:04:05Z"}}`)},
			do:   func(ctx context.Context, c *juju.Client) (any, error) { return c.SecretInfo(ctx, "web-keys", true) },
			want: []call{{tool: "secret-info-get", args: []string{"--format=json", "--label", "web-keys"}}},
			wantOut: juju.SecretInfo{ID: "d0k6v1r0ib7s73f4q1ug", Revision: 3, Label: "web-keys", Owner: "application",
				Rotation: "monthly", Expiry: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		},
		{
			name:    "info/by-id-not-found",
			replies: []reply{{code: 1, stderr: "ERROR secret \"x\" not found\n"}},
			do:      func(ctx context.Context, c *juju.Client) (any, error) { return c.SecretInfo(ctx, uri, false) },
			want:    []call{{tool: "secret-info-get", args: []string{"--format=json", uri}}},
			wantErr: juju.ErrSecretNotFound,
		},
	})
}

// TestClientSecretFilesRemoved checks that the private content directory does not outlive the
// call, whether the tool succeeds or fails.
func TestClientSecretFilesRemoved(t *testing.T) {
	t.Parallel()
	for _, rep := range []reply{ok("secret:x"), {code: 1, stderr: "ERROR boom"}} {
		var seen []string
		r := runnerFunc(func(_ context.Context, _ string, args []string, _ []byte) ([]byte, error) {
			for _, a := range args {
				if _, p, ok := strings.Cut(a, "#file="); ok {
					seen = append(seen, p)
				}
			}
			if rep.code != 0 {
				return nil, &juju.ToolError{Tool: "secret-add", ExitCode: rep.code, Stderr: rep.stderr}
			}
			return []byte(rep.stdout), nil
		})
		c := juju.NewClient(r, juju.Env{})
		_, _ = c.AddSecret(t.Context(), juju.SecretAddOptions{Content: map[string]string{"password": "x"}})
		if len(seen) != 1 {
			t.Fatalf("want one content file, got %v", seen)
		}
		if _, err := os.Stat(seen[0]); !os.IsNotExist(err) {
			t.Errorf("content file %s still exists after the call (err %v)", seen[0], err)
		}
	}
}

type runnerFunc func(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error)

func (f runnerFunc) Run(ctx context.Context, tool string, args []string, stdin []byte) ([]byte, error) {
	return f(ctx, tool, args, stdin)
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
