package concourse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultGardenAddr is where `concourse worker` serves the Garden API when CONCOURSE_BIND_IP and
// CONCOURSE_BIND_PORT are unset (the charm leaves them unset): loopback only, port 7777. The
// worker's TSA connection forwards it to the web; the charm's own hooks read it directly.
const DefaultGardenAddr = "127.0.0.1:7777"

// DefaultWorkerStopTimeout is the worker's TimeoutStopSec when UnitOptions.StopTimeout is zero:
// 300 s, as in the official systemd guide.
const DefaultWorkerStopTimeout = 300 * time.Second

// GardenContainers counts the containers the worker's Garden server at addr (host:port) holds,
// with GET /containers, which answers {"Handles":[...]}. Seen with the real 7.14.3 worker on the
// houdini runtime (a handle created with POST /containers is listed until it is destroyed); the
// containerd runtime serves the same Garden API on the same address. While a worker lands, this
// is what it still waits for: one container per running step.
func GardenContainers(ctx context.Context, c *http.Client, addr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/containers", nil)
	if err != nil {
		return 0, fmt.Errorf("building the Garden request: %w", err)
	}
	if c == nil {
		c = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{Proxy: nil}}
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("asking the worker's Garden for its containers: %w", stripURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, fmt.Errorf("reading GET %s: %w", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, &APIError{Method: req.Method, URL: req.URL.String(), StatusCode: resp.StatusCode, Body: string(body)}
	}
	var list struct {
		Handles *[]string `json:"Handles"`
	}
	if err := json.Unmarshal(body, &list); err != nil || list.Handles == nil {
		return 0, fmt.Errorf("GET %s: not a Garden container list: %.100q", req.URL, body)
	}
	return len(*list.Handles), nil
}

// RestartNoBlock queues a restart of unit and returns at once (systemctl restart --no-block):
// for the worker, systemd sends KillSignal (SIGUSR1: land), waits until the worker has exited or
// TimeoutStopSec has passed (then SIGKILL), and starts it again, reading the unit and its
// EnvironmentFile afresh. A hook must not wait the drain timeout out; it reports the drain
// (ActiveState "deactivating") instead.
func (s Systemd) RestartNoBlock(ctx context.Context, unit string) error {
	if err := checkUnitName(unit); err != nil {
		return err
	}
	_, err := s.run(ctx, "restart", "--no-block", unit)
	return err
}

// StopNoBlock queues a stop of unit and returns at once (systemctl stop --no-block): the worker
// lands and exits, or is killed at TimeoutStopSec, while the hook goes on.
func (s Systemd) StopNoBlock(ctx context.Context, unit string) error {
	if err := checkUnitName(unit); err != nil {
		return err
	}
	_, err := s.run(ctx, "stop", "--no-block", unit)
	return err
}
