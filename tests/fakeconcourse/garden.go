package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// garden is the part of the worker's Garden API the charm calls (its Draining status counts
// GET /containers) and what a test needs to make a worker busy: POST /containers creates a
// container by handle, DELETE /containers/<handle> destroys it. The answers are the real
// worker's (7.14.3 and 8.2.5, houdini; TestFidelityGardenContainers): {"Handles":[...]},
// {"Handle":"h"} on create, {} on destroy.
type garden struct {
	mu      sync.Mutex
	handles map[string]bool
}

// serveGarden listens on addr (bind-ip:bind-port, 127.0.0.1:7777 by default, as the real worker);
// a busy port fails the worker as it fails the real one.
func serveGarden(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("Exit trace for group:\ngarden exited with error: %s\n", err)
	}
	g := &garden{handles: map[string]bool{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: g}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

func (g *garden) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/ping" && r.Method == http.MethodGet:
		fmt.Fprint(w, "{}")
	case r.URL.Path == "/containers" && r.Method == http.MethodGet:
		list := []string{}
		for h := range g.handles {
			list = append(list, h)
		}
		sort.Strings(list)
		json.NewEncoder(w).Encode(map[string][]string{"Handles": list})
	case r.URL.Path == "/containers" && r.Method == http.MethodPost:
		var spec struct {
			Handle string `json:"handle"`
		}
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil || spec.Handle == "" {
			http.Error(w, `{"Type":"","Message":"bad container spec"}`, http.StatusInternalServerError)
			return
		}
		g.handles[spec.Handle] = true
		json.NewEncoder(w).Encode(map[string]string{"Handle": spec.Handle})
	case strings.HasPrefix(r.URL.Path, "/containers/") && r.Method == http.MethodDelete:
		delete(g.handles, strings.TrimPrefix(r.URL.Path, "/containers/"))
		fmt.Fprint(w, "{}")
	default:
		http.NotFound(w, r)
	}
}
