package concourse

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// fakeWeb serves the three endpoints as contract §6.1 describes them.
func fakeWeb(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"version":"8.2.5","worker_version":"2.5","feature_flags":{"global_resources":false},"external_url":"http://10.0.0.10:8080"}`))
	})
	mux.HandleFunc("POST /sky/issuer/token", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "fly" || p != "Zmx5" {
			http.Error(w, "bad client", http.StatusUnauthorized)
			return
		}
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		if r.PostForm.Get("grant_type") != "password" || r.PostForm.Get("scope") != "openid profile email federated:id groups" {
			t.Errorf("form = %v", r.PostForm)
		}
		if r.PostForm.Get("username") != "admin" || r.PostForm.Get("password") != "s3cret pass&=" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"access_denied","error_description":"Invalid username or password"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-123", "token_type": "bearer", "expires_in": 86399})
	})
	mux.HandleFunc("GET /api/v1/workers", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-123" {
			http.Error(w, "not authorized", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`[{"name":"concourse-ci-machine-1","state":"running","version":"2.5","tags":["gpu"],"platform":"linux","team":"","start_time":1767225600,"ephemeral":false,"addr":"10.0.0.10:35000"},
			{"name":"concourse-ci-machine-10","state":"stalled","version":"2.5","tags":null,"platform":"linux"}]`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestAPI(t *testing.T) {
	t.Parallel()
	srv := fakeWeb(t)
	ctx := context.Background()

	info, err := Info(ctx, srv.Client(), srv.URL+"/")
	if err != nil || info != (InfoResponse{Version: "8.2.5", WorkerVersion: "2.5", ExternalURL: "http://10.0.0.10:8080"}) {
		t.Fatalf("Info = %+v, %v", info, err)
	}

	tok, err := PasswordToken(ctx, srv.Client(), srv.URL, "admin", "s3cret pass&=")
	if err != nil || tok != "tok-123" {
		t.Fatalf("PasswordToken = %q, %v", tok, err)
	}
	_, err = PasswordToken(ctx, srv.Client(), srv.URL, "admin", "wrong-password")
	var ae *APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized || !strings.Contains(err.Error(), "Invalid username or password") {
		t.Errorf("PasswordToken with a wrong password = %v", err)
	}
	if strings.Contains(err.Error(), "wrong-password") {
		t.Errorf("error %q leaks the password", err)
	}

	workers, err := Workers(ctx, srv.Client(), srv.URL, tok)
	if err != nil || len(workers) != 2 {
		t.Fatalf("Workers = %+v, %v", workers, err)
	}
	w0 := workers[0]
	if w0.Name != "concourse-ci-machine-1" || w0.State != "running" || w0.Version != "2.5" || !slices.Equal(w0.Tags, []string{"gpu"}) ||
		w0.Platform != "linux" || w0.StartTime != 1767225600 {
		t.Errorf("worker 0 = %+v", w0)
	}
	if workers[1].State != "stalled" || workers[1].Tags != nil {
		t.Errorf("worker 1 = %+v", workers[1])
	}
	_, err = Workers(ctx, srv.Client(), srv.URL, "bad-token")
	if !errors.As(err, &ae) || ae.StatusCode != 401 || !strings.Contains(err.Error(), "not authorized") {
		t.Errorf("Workers with a bad token = %v", err)
	}
	if strings.Contains(err.Error(), "bad-token") {
		t.Errorf("error %q leaks the token", err)
	}
}

func TestAPIFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"html", "<html>", 200, "decoding"},
		{"no-version", "{}", 200, "no version"},
		{"500", "boom", 500, "HTTP 500: boom"},
		{"long-body", strings.Repeat("x", 5000), 503, "HTTP 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := Info(ctx, srv.Client(), srv.URL)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), srv.URL+"/api/v1/info") {
				t.Errorf("Info = %v; want an error naming the URL and %q", err, tc.want)
			}
			if err != nil && len(err.Error()) > 1000 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
	// Nothing listening.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if _, err := Info(ctx, http.DefaultClient, url); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Info against a closed port = %v", err)
	}
}
