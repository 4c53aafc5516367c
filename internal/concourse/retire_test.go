package concourse

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The web's answers to a retire request, as the charm reads them.
func TestRetireWorker(t *testing.T) {
	t.Parallel()
	var gotMethod, gotPath, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotMethod, gotPath, gotAuth = r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization")
		switch r.URL.Path {
		case "/api/v1/workers/app-2/retire":
			w.WriteHeader(http.StatusOK)
		case "/api/v1/workers/gone/retire":
			w.WriteHeader(http.StatusNotFound)
		default:
			http.Error(w, "not an admin", http.StatusForbidden)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	found, err := RetireWorker(ctx, srv.Client(), srv.URL+"/", "tok", "app-2")
	if err != nil || !found {
		t.Fatalf("retiring a known worker: found %t, %v; want found", found, err)
	}
	if gotMethod != http.MethodPut || gotPath != "/api/v1/workers/app-2/retire" || gotAuth != "Bearer tok" {
		t.Errorf("request = %s %s (Authorization %q); want PUT /api/v1/workers/app-2/retire with the bearer token", gotMethod, gotPath, gotAuth)
	}
	if found, err := RetireWorker(ctx, srv.Client(), srv.URL, "tok", "gone"); err != nil || found {
		t.Errorf("retiring an unknown worker: found %t, %v; want not found and no error", found, err)
	}
	_, err = RetireWorker(ctx, srv.Client(), srv.URL, "tok", "other")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden {
		t.Errorf("a refused retire: %v; want an *APIError with 403", err)
	}
}
