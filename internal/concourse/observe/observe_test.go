package observe

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

var testTopology = Topology{Model: "ci", ModelUUID: "5f0c2a3e-1111-4222-8333-444455556666", Application: "concourse-web", Unit: "concourse-web/0"}

// The alert_rules value as the Prometheus charm's MetricsEndpointConsumer reads it: a rule file
// whose first rule's labels give the topology (it names the rules file after it and injects the
// matchers again from them), expressions already filtered to this application.
func TestAlertRules(t *testing.T) {
	raw, err := AlertRules(testTopology)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		t.Fatalf("alert_rules is not JSON: %v\n%s", err, raw)
	}
	if len(f.Groups) != 1 || f.Groups[0].Name != "ci_5f0c2a3e_concourse_web_concourse_rules" {
		t.Fatalf("groups = %+v; want one named <model>_<uuid[:8]>_<app>_concourse_rules (sanitized)", f.Groups)
	}
	alerts := map[string]bool{}
	for _, r := range f.Groups[0].Rules {
		alerts[r.Alert] = true
		for k, want := range map[string]string{"juju_model": "ci", "juju_model_uuid": testTopology.ModelUUID,
			"juju_application": "concourse-web", "juju_charm": CharmName} {
			if r.Labels[k] != want {
				t.Errorf("%s: label %s = %q, want %q", r.Alert, k, r.Labels[k], want)
			}
		}
		if _, ok := r.Labels["juju_unit"]; ok {
			t.Errorf("%s carries juju_unit: the rules are per application", r.Alert)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.For == "" {
			t.Errorf("%s lacks a severity, a summary or a for: %+v", r.Alert, r)
		}
		if strings.Contains(r.Expr, "%%") || !strings.Contains(r.Expr, `juju_model="ci",juju_model_uuid="5f0c2a3e-1111-4222-8333-444455556666",juju_application="concourse-web"`) {
			t.Errorf("%s: expr %q is not filtered to the application", r.Alert, r.Expr)
		}
	}
	for _, a := range []string{"ConcourseWebDown", "ConcourseNoRunningWorkers", "ConcourseWorkersStalled", "ConcourseDatabaseFailing"} {
		if !alerts[a] {
			t.Errorf("no %s alert", a)
		}
	}
	if again, _ := AlertRules(testTopology); again != raw {
		t.Error("AlertRules is not deterministic: every hook would change the relation data")
	}
}

func TestTopologyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		top  Topology
		want string
	}{
		{"no model UUID", Topology{Model: "ci", Application: "a", Unit: "a/0"}, "model UUID"},
		{"a quote would break the matcher", Topology{Model: `c"i`, ModelUUID: "u", Application: "a", Unit: "a/0"}, "label matcher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := AlertRules(tc.top); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AlertRules: %v; want an error about %s", err, tc.want)
			}
			if _, err := Dashboards(tc.top); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Dashboards: %v; want an error about %s", err, tc.want)
			}
		})
	}
	if _, err := Dashboards(Topology{Model: "ci", ModelUUID: "u", Application: "a"}); err == nil {
		t.Error("Dashboards without the unit: no error")
	}
}

// decompressors are the programs that read LZMABase64's content as the Grafana charm does
// (Python's lzma) and as an operator would (xz).
var decompressors = map[string][]string{
	"python3 lzma": {"python3", "-c", "import lzma,sys; sys.stdout.buffer.write(lzma.decompress(sys.stdin.buffer.read()))"},
	"xz":           {"xz", "-dc"},
}

func decompress(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	argv := decompressors[name]
	if _, err := exec.LookPath(argv[0]); err != nil {
		t.Skipf("%s not installed", argv[0])
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", name, err, stderr.String())
	}
	return out
}

// The dashboards value as the Grafana charm's GrafanaDashboardConsumer reads it.
func TestDashboards(t *testing.T) {
	raw, err := Dashboards(testTopology)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Templates map[string]struct {
			Charm           string            `json:"charm"`
			Content         string            `json:"content"`
			JujuTopology    map[string]string `json:"juju_topology"`
			InjectDropdowns bool              `json:"inject_dropdowns"`
			AltUID          string            `json:"dashboard_alt_uid"`
		} `json:"templates"`
		UUID string `json:"uuid"`
	}
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("dashboards is not JSON: %v", err)
	}
	tmpl, ok := v.Templates["file:concourse"]
	if !ok || len(v.Templates) != 1 {
		t.Fatalf("templates = %v; want file:concourse", v.Templates)
	}
	if tmpl.Charm != CharmName || !tmpl.InjectDropdowns || tmpl.JujuTopology["unit"] != "concourse-web/0" ||
		tmpl.JujuTopology["model_uuid"] != testTopology.ModelUUID || tmpl.JujuTopology["application"] != "concourse-web" {
		t.Errorf("template metadata = %+v", tmpl)
	}
	// python3 -c "import hashlib; print(hashlib.shake_256(b'concourse-ci-machine-file:concourse').hexdigest(8))"
	if tmpl.AltUID != "075cb3159aec4c12" {
		t.Errorf("dashboard_alt_uid = %q; want cos-lib's shake_256 of charm-id, 075cb3159aec4c12", tmpl.AltUID)
	}
	if len(v.UUID) != 36 {
		t.Errorf("uuid %q is not UUID-shaped", v.UUID)
	}
	xz, err := base64.StdEncoding.DecodeString(tmpl.Content)
	if err != nil {
		t.Fatalf("content is not base64: %v", err)
	}
	for name := range decompressors {
		t.Run(name, func(t *testing.T) {
			got := decompress(t, name, xz)
			var d struct {
				UID    string `json:"uid"`
				Panels []struct {
					Datasource string `json:"datasource"`
					Targets    []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal(got, &d); err != nil {
				t.Fatalf("the decompressed content is not the dashboard JSON: %v", err)
			}
			if d.UID != "concourse-ci-machine" || len(d.Panels) < 5 {
				t.Errorf("dashboard uid %q with %d panels", d.UID, len(d.Panels))
			}
			for i, p := range d.Panels {
				if p.Datasource != "${prometheusds}" || len(p.Targets) == 0 {
					t.Errorf("panel %d: datasource %q, %d targets; the Grafana charm binds ${prometheusds}", i, p.Datasource, len(p.Targets))
				}
			}
		})
	}
	again, _ := Dashboards(testTopology)
	other := testTopology
	other.Unit = "concourse-web/1"
	moved, _ := Dashboards(other)
	if again != raw {
		t.Error("Dashboards is not deterministic")
	}
	if moved == raw || strings.Contains(moved, v.UUID) {
		t.Error("a new leader's dashboards keep the same uuid: Grafana would not see the change")
	}
}

// xzStore's streams, of sizes around the 64 KiB chunk limit, read back byte for byte.
func TestXZStore(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 65535, 65536, 65537, 200003} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + i/251)
		}
		stream := xzStore(data)
		for name := range decompressors {
			t.Run(name, func(t *testing.T) {
				if got := decompress(t, name, stream); !bytes.Equal(got, data) {
					t.Errorf("%d bytes came back as %d different bytes", n, len(got))
				}
			})
		}
	}
}

func TestMetricNames(t *testing.T) {
	names, err := MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"concourse_workers_registered", "concourse_gc_gc_worker_collector_duration_count", "concourse_builds_running"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("MetricNames %v lacks %s", names, want)
		}
	}
}
