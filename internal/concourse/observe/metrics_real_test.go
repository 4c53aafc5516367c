package observe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/pgtest"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realconcourse"
	"github.com/concourse-ci-machine/concourse-ci-machine/internal/testutil/realweb"
)

// gcInterval is the test web's garbage-collection interval (the default is 30 s).
const gcInterval = 4 * time.Second

// realSite is a real web (Prometheus on a loopback port) and a real houdini worker.
type realSite struct {
	metricsURL string
	web        *realweb.Child
	worker     *realweb.Child
	families   map[string]string // the first scrape with the worker counted as running
}

// startReal starts a real web of version and a real houdini worker, and waits until /metrics
// counts the worker as running.
func startReal(t *testing.T, ctx context.Context, set realconcourse.Set, pg *pgtest.Cluster, version, dbName string) realSite {
	bin := set.Concourse(version)
	pg.CreateRole(t, dbName, dbName+"-pw")
	pg.CreateDatabase(t, dbName, dbName)
	dir := t.TempDir()
	realweb.GenerateKeys(t, ctx, bin, dir)
	lb := realweb.NewLoopback(t)
	promPort := realweb.FreePort(t)
	env := append([]string{
		"CONCOURSE_ADD_LOCAL_USER=admin:metrics-pw",
		"CONCOURSE_MAIN_TEAM_LOCAL_USER=admin",
		"CONCOURSE_SESSION_SIGNING_KEY=" + filepath.Join(dir, "session_signing_key"),
		"CONCOURSE_TSA_HOST_KEY=" + filepath.Join(dir, "tsa_host_key"),
		"CONCOURSE_TSA_AUTHORIZED_KEYS=" + filepath.Join(dir, "worker_key.pub"),
		"CONCOURSE_TSA_HEARTBEAT_INTERVAL=3s",
		"CONCOURSE_GC_INTERVAL=" + gcInterval.String(),
		"CONCOURSE_PROMETHEUS_BIND_IP=127.0.0.1",
		"CONCOURSE_PROMETHEUS_BIND_PORT=" + strconv.Itoa(promPort),
		"CONCOURSE_POSTGRES_HOST=" + pg.Host(),
		"CONCOURSE_POSTGRES_PORT=" + strconv.Itoa(pg.Port()),
		"CONCOURSE_POSTGRES_USER=" + dbName,
		"CONCOURSE_POSTGRES_PASSWORD=" + dbName + "-pw",
		"CONCOURSE_POSTGRES_DATABASE=" + dbName,
	}, lb.WebEnv(t)...)
	web := realweb.Start(t, bin, []string{"web"}, env, filepath.Join(dir, "web.log"))
	realweb.WaitInfo(t, ctx, web, lb.URL)

	worker := realweb.StartHoudiniWorker(t, bin, "metrics-worker", dir, lb.TSAPort, filepath.Join(dir, "worker"), filepath.Join(dir, "worker.log"))

	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", promPort)
	var families map[string]string
	realweb.WaitFor(t, ctx, web, 2*time.Minute, "the worker metrics", func() error {
		var err error
		families, err = scrape(ctx, url)
		if err != nil {
			return err
		}
		if v, ok := sampleValue(families, `concourse_workers_registered{state="running"}`); ok && v == 1 {
			return nil
		}
		return fmt.Errorf("concourse_workers_registered{state=\"running\"} is not 1 yet")
	})
	return realSite{metricsURL: url, web: web, worker: worker, families: families}
}

// scrape reads a Prometheus text exposition: every series (name and labels as printed) with
// its value, and every bare metric name with "" (so names can be looked up too).
func scrape(ctx context.Context, url string) (map[string]string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		out[series] = value
		if j := strings.IndexByte(series, '{'); j >= 0 {
			if _, ok := out[series[:j]]; !ok {
				out[series[:j]] = ""
			}
		}
	}
	return out, sc.Err()
}

// sampleValue is the value of one series of a scrape.
func sampleValue(families map[string]string, series string) (float64, bool) {
	v, ok := families[series]
	if !ok || v == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	return f, err == nil
}

// TestMetricsRealConcourse checks the alert rules and the dashboard against the real web of
// each version: every metric they use is in its /metrics, and the series the alerts read
// behave as the rules assume: garbage collections are recorded every gc-interval on a healthy
// web, not while the database refuses connections, and again once it takes them
// (ConcourseDatabaseFailing); a worker killed hard shows
// as state="stalled" with no running one left (ConcourseWorkersStalled,
// ConcourseNoRunningWorkers).
func TestMetricsRealConcourse(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Concourse web and worker processes")
	}
	set := realconcourse.Require(t)
	pg := pgtest.Start(t, pgtest.Options{})
	used, err := MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(used) < 8 {
		t.Fatalf("MetricNames = %v: the rules and panels should use more metrics", used)
	}
	for i, v := range []string{"7.14.3", "8.2.5"} {
		t.Run(v, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			db := "metrics" + strconv.Itoa(i)
			site := startReal(t, ctx, set, pg, v, db)
			for _, m := range used {
				if _, ok := site.families[m]; !ok {
					t.Errorf("%s does not expose %s, which the rules or the dashboard use", v, m)
				}
			}
			// counter reads a counter of a fresh scrape.
			counter := func(series string) float64 {
				f, err := scrape(ctx, site.metricsURL)
				if err != nil {
					t.Fatal(err)
				}
				q, ok := sampleValue(f, series)
				if !ok {
					t.Fatalf("no %s", series)
				}
				return q
			}
			const gcRuns = "concourse_gc_gc_worker_collector_duration_count"
			const window = 5 * gcInterval
			g0, q0 := counter(gcRuns), counter("concourse_db_queries_total")
			time.Sleep(window)
			g1, q1 := counter(gcRuns), counter("concourse_db_queries_total")
			t.Logf("%s healthy: %.0f garbage collections and %.0f database queries in %s (gc-interval %s)", v, g1-g0, q1-q0, window, gcInterval)
			if g1-g0 < 2 {
				t.Errorf("a healthy web ran %.0f garbage collections in %s; ConcourseDatabaseFailing assumes one every gc-interval", g1-g0, window)
			}

			// The worker killed hard: stalled after the heartbeat TTL, nothing running.
			if err := site.worker.Cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			site.worker.Wait(10 * time.Second)
			start := time.Now()
			realweb.WaitFor(t, ctx, site.web, 2*time.Minute, "the stalled worker in /metrics", func() error {
				f, err := scrape(ctx, site.metricsURL)
				if err != nil {
					return err
				}
				stalled, _ := sampleValue(f, `concourse_workers_registered{state="stalled"}`)
				running, hasRunning := sampleValue(f, `concourse_workers_registered{state="running"}`)
				if stalled == 1 && (!hasRunning || running == 0) {
					t.Logf("%s: stalled in /metrics %s after SIGKILL; running series present: %v", v, time.Since(start).Round(time.Second), hasRunning)
					return nil
				}
				return fmt.Errorf("stalled %v, running %v (present %v)", stalled, running, hasRunning)
			})

			// The database refusing the web: garbage collection stops being recorded.
			pg.Exec(t, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS false")
			pg.Exec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+db+"'")
			time.Sleep(gcInterval + time.Second) // let a collection already under way finish
			g2, q2 := counter(gcRuns), counter("concourse_db_queries_total")
			time.Sleep(2 * window)
			g3, q3 := counter(gcRuns), counter("concourse_db_queries_total")
			pg.Exec(t, "ALTER DATABASE "+db+" ALLOW_CONNECTIONS true") // so that the web stops promptly
			t.Logf("%s with the database refusing connections: %.0f garbage collections and %.0f queries in %s", v, g3-g2, q3-q2, 2*window)
			if g3-g2 != 0 {
				t.Errorf("with its database refusing connections the web still recorded %.0f garbage collections in %s", g3-g2, 2*window)
			}
			// And the web recovers: collections resume once the database takes connections.
			realweb.WaitFor(t, ctx, site.web, 2*time.Minute, "garbage collection to resume", func() error {
				if g := counter(gcRuns); g <= g3 {
					return fmt.Errorf("%s still %.0f", gcRuns, g)
				}
				return nil
			})
		})
	}
}
