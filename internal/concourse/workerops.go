package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Worker states as GET /api/v1/workers reports them.
const (
	WorkerRunning  = "running"
	WorkerStalled  = "stalled"
	WorkerLanding  = "landing"
	WorkerLanded   = "landed"
	WorkerRetiring = "retiring"
)

// ErrWorkerRunning is PruneWorker's answer for a worker in state running: the web prunes only
// stalled, landing, landed or retiring workers (a running one would register again at its next
// heartbeat anyway). errors.Is works on the error PruneWorker returns.
var ErrWorkerRunning = errors.New("the worker is running: the web prunes only stalled, landing, landed or retiring workers (land or retire it first)")

// WorkerOpResult is the outcome of a worker operation the web accepted or could not apply.
type WorkerOpResult int

const (
	// WorkerOpDone: the web accepted the request.
	WorkerOpDone WorkerOpResult = iota
	// WorkerOpNotFound: the web knows no worker of that name (already pruned or retired, or
	// never registered): nothing to do.
	WorkerOpNotFound
)

// LandWorker asks the web to land a worker (PUT /api/v1/workers/<name>/land, an admin's token
// from PasswordToken), what `fly land-worker` does: the worker turns "landing", the web
// schedules nothing new on it, and once no build runs there it turns "landed". It stays landed,
// taking no work, while its process keeps running; restarting the worker process registers it
// as running again (that is how a hook "resumes" it). A hook's land-worker action calls this on
// the web for the unit's worker name, then polls Workers (and, for the status, shows
// WorkerInfo.ActiveContainers as "Draining: N containers" while it is landing).
func LandWorker(ctx context.Context, c *http.Client, baseURL, token, name string) (WorkerOpResult, error) {
	return workerPut(ctx, c, baseURL, token, name, "land")
}

// PruneWorker asks the web to delete a worker that is not running (PUT
// /api/v1/workers/<name>/prune), what `fly prune-worker` does: for workers whose machine is
// gone and that stay "stalled" in `fly workers` for ever. A running worker is refused with an
// error matching ErrWorkerRunning. A hook's prune-workers action lists Workers, prunes each
// StalledWorkers name and reports what it removed.
func PruneWorker(ctx context.Context, c *http.Client, baseURL, token, name string) (WorkerOpResult, error) {
	res, err := workerPut(ctx, c, baseURL, token, name, "prune")
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest && strings.Contains(apiErr.Body, "running") {
		return res, fmt.Errorf("pruning worker %s: %w", name, ErrWorkerRunning)
	}
	return res, err
}

// workerPut sends PUT /api/v1/workers/<name>/<op>; 404 is WorkerOpNotFound, any other non-2xx
// an *APIError (the web's body says why, e.g. a token that is not the main team's admin: 403).
func workerPut(ctx context.Context, c *http.Client, baseURL, token, name, op string) (WorkerOpResult, error) {
	if name == "" {
		return 0, fmt.Errorf("%s worker: no worker name", op)
	}
	u := apiURL(baseURL, "/api/v1/workers/"+url.PathEscape(name)+"/"+op)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, nil)
	if err != nil {
		return 0, fmt.Errorf("building the %s request: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("PUT %s: %w", req.URL.Redacted(), stripURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return WorkerOpNotFound, nil
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return 0, &APIError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Body: workerErrorBody(body)}
	}
	return WorkerOpDone, nil
}

// workerErrorBody reads the web's {"stderr": "..."} error shape for worker operations, falling
// back to the raw text.
func workerErrorBody(body []byte) string {
	var e struct {
		Stderr string `json:"stderr"`
	}
	if json.Unmarshal(body, &e) == nil && e.Stderr != "" {
		return e.Stderr
	}
	return strings.TrimSpace(string(body))
}

// FindWorker returns the worker of that name in a Workers answer.
func FindWorker(workers []WorkerInfo, name string) (WorkerInfo, bool) {
	for _, w := range workers {
		if w.Name == name {
			return w, true
		}
	}
	return WorkerInfo{}, false
}

// StalledWorkers are the names of the workers in state stalled: the ones prune-workers removes.
func StalledWorkers(workers []WorkerInfo) []string {
	var out []string
	for _, w := range workers {
		if w.State == WorkerStalled {
			out = append(out, w.Name)
		}
	}
	return out
}
