package concourse

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// RetireWorker asks the web to retire a worker (PUT /api/v1/workers/<name>/retire, an admin's
// token from PasswordToken): the worker turns "retiring" and the web deletes it once no build
// runs on it. It is how a worker that can no longer reach the TSA itself leaves `fly workers`
// instead of stalling there. found is false when the web knows no such worker (404).
func RetireWorker(ctx context.Context, c *http.Client, baseURL, token, name string) (found bool, err error) {
	u := apiURL(baseURL, "/api/v1/workers/"+url.PathEscape(name)+"/retire")
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, nil)
	if err != nil {
		return false, fmt.Errorf("building the retire request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, fmt.Errorf("PUT %s: %w", req.URL.Redacted(), stripURLError(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return false, &APIError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	return true, nil
}
