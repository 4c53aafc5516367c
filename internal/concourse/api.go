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

// InfoResponse is GET /api/v1/info (contract §6.1), unauthenticated.
type InfoResponse struct {
	Version       string `json:"version"`
	WorkerVersion string `json:"worker_version"`
	ExternalURL   string `json:"external_url"`
	ClusterName   string `json:"cluster_name"`
}

// WorkerInfo is one entry of GET /api/v1/workers. State is one of running,
// stalled, landing, landed, retiring.
type WorkerInfo struct {
	Name      string   `json:"name"`
	State     string   `json:"state"`
	Version   string   `json:"version"`
	Tags      []string `json:"tags"`
	Platform  string   `json:"platform"`
	Team      string   `json:"team"`
	StartTime int64    `json:"start_time"`
	Ephemeral bool     `json:"ephemeral"`
	// What still runs on the worker, for a "Draining: N containers" status while it lands.
	ActiveContainers int `json:"active_containers"`
	ActiveVolumes    int `json:"active_volumes"`
	ActiveTasks      int `json:"active_tasks"`
}

// APIError is a non-2xx answer from the Concourse web API. Body is cut short
// and never holds what we sent (passwords, tokens).
type APIError struct {
	Method     string
	URL        string
	StatusCode int
	Body       string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.StatusCode)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// maxErrorBody: enough of an error body to explain it, not a whole page.
const maxErrorBody = 512

// flyClient is the public OAuth client every Concourse knows ("fly:Zmx5",
// contract §6.1); it is not a secret.
const flyClientID, flyClientSecret = "fly", "Zmx5"

func apiURL(baseURL, path string) string { return strings.TrimRight(baseURL, "/") + path }

func doJSON(c *http.Client, req *http.Request, out any) error {
	if c == nil {
		c = http.DefaultClient
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), stripURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return &APIError{Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAPIBody)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", req.Method, req.URL.Redacted(), err)
	}
	return nil
}

// stripURLError drops *url.Error's own "Get "…":" prefix, since we name the
// request ourselves.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Info asks a web node for its version; used to verify that web really
// serves after a start, instead of trusting the unit state (contract §8.12).
func Info(ctx context.Context, c *http.Client, baseURL string) (InfoResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL(baseURL, "/api/v1/info"), nil)
	if err != nil {
		return InfoResponse{}, fmt.Errorf("building the info request: %w", err)
	}
	var info InfoResponse
	if err := doJSON(c, req, &info); err != nil {
		return InfoResponse{}, err
	}
	if info.Version == "" {
		return InfoResponse{}, fmt.Errorf("GET %s: the answer has no version", req.URL.Redacted())
	}
	return info, nil
}

// PasswordToken logs a local user in with the password grant fly uses and
// returns the bearer access token. A wrong password is an *APIError with
// StatusCode 401.
func PasswordToken(ctx context.Context, c *http.Client, baseURL, user, pass string) (string, error) {
	form := url.Values{
		"grant_type": {"password"},
		"username":   {user},
		"password":   {pass},
		"scope":      {"openid profile email federated:id groups"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL(baseURL, "/sky/issuer/token"), strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("building the token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(flyClientID, flyClientSecret)
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := doJSON(c, req, &tok); err != nil {
		return "", err
	}
	if tok.AccessToken == "" {
		return "", fmt.Errorf("POST %s: the answer has no access_token", req.URL.Redacted())
	}
	return tok.AccessToken, nil
}

// Workers lists the registered workers (needs a token from PasswordToken).
// Registration is judged here because a worker that cannot reach the TSA
// keeps running and retrying (contract §3.2).
func Workers(ctx context.Context, c *http.Client, baseURL, token string) ([]WorkerInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL(baseURL, "/api/v1/workers"), nil)
	if err != nil {
		return nil, fmt.Errorf("building the workers request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var workers []WorkerInfo
	if err := doJSON(c, req, &workers); err != nil {
		return nil, err
	}
	return workers, nil
}
