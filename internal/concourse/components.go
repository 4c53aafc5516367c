package concourse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RuntimeComponents are the web components that start and run builds, the ones
// `fly pause-component --runtime-components` pauses "before upgrading Concourse" (8.2's
// atc.ComponentsRuntime: tracker, scanner, scheduler).
var RuntimeComponents = []string{"tracker", "scanner", "scheduler"}

// ErrComponentsUnsupported means the web has no component API (GET /api/v1/components answers
// 404): it came with 8.2, and an older web has nothing to pause, so the upgrade goes on without.
var ErrComponentsUnsupported = errors.New("this Concourse web has no component API (it came in 8.2): nothing to pause")

// ComponentInfo is one entry of GET /api/v1/components (8.2+, an admin's token).
type ComponentInfo struct {
	Name     string        `json:"name"`
	Interval time.Duration `json:"interval"` // nanoseconds, as Go's time.Duration marshals
	LastRan  time.Time     `json:"last_ran"`
	Paused   bool          `json:"paused"`
}

// Components lists the web's components; ErrComponentsUnsupported before 8.2.
func Components(ctx context.Context, c *http.Client, baseURL, token string) ([]ComponentInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL(baseURL, "/api/v1/components"), nil)
	if err != nil {
		return nil, fmt.Errorf("building the components request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var comps []ComponentInfo
	err = doJSON(c, req, &comps)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		return nil, ErrComponentsUnsupported
	}
	return comps, err
}

// PauseComponents pauses the named web components (PUT /api/v1/components/<name>/pause), as
// `fly pause-component` does. The pause is in the database, so it holds for every web and
// survives their restarts: the upgrade step calls PauseComponents(…, RuntimeComponents...) on
// the old web before stopping every web, and UnpauseComponents once the new release serves
// (and on every failure path after it paused: a paused scheduler runs no build). Against a web
// before 8.2 it returns ErrComponentsUnsupported and pauses nothing; a name the web does not
// have is an error before anything is paused.
func PauseComponents(ctx context.Context, c *http.Client, baseURL, token string, names ...string) error {
	return setComponents(ctx, c, baseURL, token, "pause", names)
}

// UnpauseComponents undoes PauseComponents.
func UnpauseComponents(ctx context.Context, c *http.Client, baseURL, token string, names ...string) error {
	return setComponents(ctx, c, baseURL, token, "unpause", names)
}

func setComponents(ctx context.Context, c *http.Client, baseURL, token, op string, names []string) error {
	comps, err := Components(ctx, c, baseURL, token)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, comp := range comps {
		known[comp.Name] = true
	}
	for _, n := range names {
		if !known[n] {
			return fmt.Errorf("%s components: the web has no component %q", op, n)
		}
	}
	if c == nil {
		c = http.DefaultClient
	}
	for _, n := range names {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, apiURL(baseURL, "/api/v1/components/"+url.PathEscape(n)+"/"+op), nil)
		if err != nil {
			return fmt.Errorf("building the %s request: %w", op, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("PUT %s: %w", req.URL.Redacted(), stripURLError(err))
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return &APIError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
		}
	}
	return nil
}
