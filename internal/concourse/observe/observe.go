// Package observe holds the observability the charm ships as data: Prometheus alert rules for
// the monitoring relation (interface prometheus_scrape, app-data key "alert_rules") and a
// Grafana dashboard for the grafana-dashboard relation (interface grafana_dashboard, app-data
// key "dashboards"), in the shapes canonical/cos-lib's libraries write them (checked against
// prometheus_k8s/v0/prometheus_scrape.py LIBPATCH 61, grafana_k8s/v0/grafana_dashboard.py
// LIBPATCH 48 and cosl's rules.py, juju_topology.py and utils.LZMABase64, 2026).
//
// Every metric the rules and panels use was read from the real web's /metrics (7.14.3 and
// 8.2.5); TestMetricsRealConcourse keeps it so. The package knows the data formats, not Juju: the
// hook hands in the topology (model, its UUID, application, charm, unit) and writes the
// returned strings as the leader's application data.
package observe

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha3"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed alert_rules.yaml
var alertRulesYAML []byte

//go:embed dashboard.json
var dashboardJSON []byte

// Keys of the leader's application data.
const (
	// AlertRulesKey carries AlertRules on every monitoring (prometheus_scrape) relation, next
	// to scrape_jobs and scrape_metadata.
	AlertRulesKey = "alert_rules"
	// DashboardsKey carries Dashboards on every grafana-dashboard relation.
	DashboardsKey = "dashboards"
	// CharmName is what the dashboard names as its charm (cos-lib uses charm.meta.name).
	CharmName = "concourse-ci-machine"
)

// Topology is where the data comes from, as cos-lib's JujuTopology: the consumer files the
// rules under it and Prometheus adds it to every alert.
type Topology struct {
	Model       string // the model's name
	ModelUUID   string
	Application string
	Charm       string // "" → CharmName
	Unit        string // the leader unit writing the data (dashboards only)
}

func (t Topology) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{{"model", t.Model}, {"model UUID", t.ModelUUID}, {"application", t.Application}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the topology lacks its %s", strings.Join(missing, ", "))
	}
	for _, v := range []string{t.Model, t.ModelUUID, t.Application, t.Charm, t.Unit} {
		if strings.ContainsAny(v, "\"\\\n{}") {
			return fmt.Errorf("topology value %q has a character that cannot go into a label matcher", v)
		}
	}
	return nil
}

func (t Topology) charm() string {
	if t.Charm == "" {
		return CharmName
	}
	return t.Charm
}

// labels are cos-lib's label_matcher_dict: juju_ + model, model_uuid, application, charm
// (never the unit: the rules are sent once per application).
func (t Topology) labels() map[string]string {
	return map[string]string{
		"juju_model": t.Model, "juju_model_uuid": t.ModelUUID,
		"juju_application": t.Application, "juju_charm": t.charm(),
	}
}

// matchers are cos-lib's alert_expression_dict as PromQL matchers (model, model_uuid,
// application: not the charm, which a subordinate's metrics would not carry).
func (t Topology) matchers() string {
	return fmt.Sprintf(`juju_model=%q,juju_model_uuid=%q,juju_application=%q`, t.Model, t.ModelUUID, t.Application)
}

// identifier is cos-lib's JujuTopology.identifier: model, the first 8 characters of its UUID,
// application.
func (t Topology) identifier() string {
	return strings.ReplaceAll(t.Model+"_"+t.ModelUUID[:min(8, len(t.ModelUUID))]+"_"+t.Application, "/", "_")
}

// RuleFile is Prometheus's rule-file format, the JSON alert_rules carries.
type RuleFile struct {
	Groups []RuleGroup `json:"groups" yaml:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name  string `json:"name" yaml:"name"`
	Rules []Rule `json:"rules" yaml:"rules"`
}

// Rule is one alerting rule.
type Rule struct {
	Alert       string            `json:"alert" yaml:"alert"`
	Expr        string            `json:"expr" yaml:"expr"`
	For         string            `json:"for,omitempty" yaml:"for"`
	Labels      map[string]string `json:"labels,omitempty" yaml:"labels"`
	Annotations map[string]string `json:"annotations,omitempty" yaml:"annotations"`
}

// nonMetricName is what cos-lib's _sanitize_metric_name replaces in a group name.
var nonMetricName = regexp.MustCompile(`[^a-zA-Z0-9_:]`)

// Rules are the embedded rules with the topology applied, as cos-lib's AlertRules leaves
// them: group names prefixed with the topology identifier and ending in _rules, the juju_*
// labels on every rule, %%juju_topology%% replaced by the topology's matchers.
func Rules(t Topology) (RuleFile, error) {
	if err := t.validate(); err != nil {
		return RuleFile{}, fmt.Errorf("alert rules: %w", err)
	}
	var f RuleFile
	if err := yaml.Unmarshal(alertRulesYAML, &f); err != nil {
		return RuleFile{}, fmt.Errorf("the embedded alert rules: %w", err)
	}
	for gi := range f.Groups {
		g := &f.Groups[gi]
		g.Name = nonMetricName.ReplaceAllString(t.identifier()+"_"+g.Name+"_rules", "_")
		for ri := range g.Rules {
			r := &g.Rules[ri]
			if !strings.Contains(r.Expr, "%%juju_topology%%") {
				return RuleFile{}, fmt.Errorf("the embedded alert %s has no %%%%juju_topology%%%% matcher", r.Alert)
			}
			r.Expr = strings.TrimSpace(strings.ReplaceAll(r.Expr, "%%juju_topology%%", t.matchers()))
			if r.Labels == nil {
				r.Labels = map[string]string{}
			}
			for k, v := range t.labels() {
				if _, ok := r.Labels[k]; !ok {
					r.Labels[k] = v
				}
			}
		}
	}
	return f, nil
}

// AlertRules is the value of the "alert_rules" key the leader writes to each monitoring
// relation's application data (JSON of Rules). Deterministic: the same topology gives the same
// bytes, so an unchanged value causes no relation-changed on the Prometheus side.
func AlertRules(t Topology) (string, error) {
	f, err := Rules(t)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("encoding the alert rules: %w", err)
	}
	return string(b), nil
}

// Dashboard is the embedded Grafana dashboard JSON, as stored (before encoding).
func Dashboard() []byte { return bytes.Clone(dashboardJSON) }

// dashboardID is the template's key, cos-lib's "file:<file stem>".
const dashboardID = "file:concourse"

// Dashboards is the value of the "dashboards" key the leader writes to each grafana-dashboard
// relation's application data, in grafana_dashboard's shape:
//
//	{"templates": {"file:concourse": {"charm": …, "content": <base64 of xz of the JSON>,
//	  "juju_topology": {"model", "model_uuid", "application", "unit"}, "inject_dropdowns": true,
//	  "dashboard_alt_uid": …}},
//	 "uuid": …}
//
// The Grafana charm base64-decodes and LZMA-decompresses content (cosl.LZMABase64, Python's
// lzma: the .xz format), adds the topology dropdowns and label matchers to the panels, and
// binds ${prometheusds} to its Prometheus sources. cos-lib puts a fresh uuid4 in "uuid" on
// every write only to force a change event; here it is derived from the templates, so it
// changes exactly when they do.
func Dashboards(t Topology) (string, error) {
	if err := t.validate(); err != nil {
		return "", fmt.Errorf("dashboards: %w", err)
	}
	if t.Unit == "" {
		return "", errors.New("dashboards: the topology lacks the unit writing them")
	}
	// Compact the embedded JSON: the dashboard is stored as Grafana exports it.
	var compact bytes.Buffer
	if err := json.Compact(&compact, dashboardJSON); err != nil {
		return "", fmt.Errorf("the embedded dashboard: %w", err)
	}
	templates := map[string]any{
		dashboardID: map[string]any{
			"charm":   t.charm(),
			"content": base64.StdEncoding.EncodeToString(xzStore(compact.Bytes())),
			"juju_topology": map[string]string{
				"model": t.Model, "model_uuid": t.ModelUUID, "application": t.Application, "unit": t.Unit,
			},
			"inject_dropdowns": true,
			// The uid the consumer gives a dashboard that has none (ours has one): cos-lib's
			// _generate_alt_uid, shake_256("<charm>-<template id>").hexdigest(8).
			"dashboard_alt_uid": altUID(t.charm(), dashboardID),
		},
	}
	tb, err := json.Marshal(templates) // map keys sorted: deterministic
	if err != nil {
		return "", fmt.Errorf("encoding the dashboards: %w", err)
	}
	sum := sha256.Sum256(tb)
	h := hex.EncodeToString(sum[:16])
	uuid := h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	b, err := json.Marshal(map[string]any{"templates": json.RawMessage(tb), "uuid": uuid})
	if err != nil {
		return "", fmt.Errorf("encoding the dashboards: %w", err)
	}
	return string(b), nil
}

// altUID is cos-lib's CharmedDashboard._generate_alt_uid: 8 bytes of SHAKE256, in hex.
func altUID(charm, id string) string {
	return hex.EncodeToString(sha3.SumSHAKE256([]byte(charm+"-"+id), 8))
}

// metricRE finds the Concourse metric names in an expression.
var metricRE = regexp.MustCompile(`\bconcourse_[a-z0-9_]+\b`)

// MetricNames are the Concourse metrics the rules and the dashboard query, sorted: what the
// web's /metrics must expose for them to mean anything.
func MetricNames() ([]string, error) {
	var f RuleFile
	if err := yaml.Unmarshal(alertRulesYAML, &f); err != nil {
		return nil, fmt.Errorf("the embedded alert rules: %w", err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, fmt.Errorf("the embedded dashboard: %w", err)
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				seen[m] = true
			}
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricRE.FindAllString(tg.Expr, -1) {
				seen[m] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}
