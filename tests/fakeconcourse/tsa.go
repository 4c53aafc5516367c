package main

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// tsaServer is the SSH gateway stand-in of contract §6.2/§9.4: workers authenticate with an
// authorized key, open up to two reverse forwards and run `forward-worker` to register.
type tsaServer struct {
	log        logger
	hostSigner ssh.Signer
	keys       atomic.Pointer[[]ssh.PublicKey] // swapped on SIGHUP
	reg        *registry
	peerAddr   string
	heartbeat  time.Duration
	wg         sync.WaitGroup
}

func newTSAServer(log logger, hostKey *rsa.PrivateKey, keys []ssh.PublicKey, reg *registry, peerAddr string, heartbeat time.Duration) (*tsaServer, error) {
	signer, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		return nil, fmt.Errorf("failed to configure SSH server: %s", err)
	}
	as, ok := signer.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("failed to configure SSH server: host key cannot choose algorithms")
	}
	// The real TSA signs only with SHA-2 RSA algorithms (§4), so clients that insist on ssh-rsa/SHA-1
	// fail here too.
	hs, err := ssh.NewSignerWithAlgorithms(as, []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512})
	if err != nil {
		return nil, fmt.Errorf("failed to configure SSH server: %s", err)
	}
	t := &tsaServer{log: log, hostSigner: hs, reg: reg, peerAddr: peerAddr, heartbeat: heartbeat}
	t.setKeys(keys)
	return t, nil
}

func (t *tsaServer) setKeys(keys []ssh.PublicKey) { t.keys.Store(&keys) }

func (t *tsaServer) config() *ssh.ServerConfig {
	cfg := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: []string{ssh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org", ssh.KeyExchangeECDHP256, ssh.KeyExchangeECDHP384, ssh.KeyExchangeECDHP521},
			MACs:         []string{ssh.HMACSHA256ETM, ssh.HMACSHA256},
		},
		// The user name is ignored (workers send "beacon"); only the key's wire bytes count.
		PublicKeyCallback: func(_ ssh.ConnMetadata, offered ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range *t.keys.Load() {
				if bytes.Equal(k.Marshal(), offered.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, errors.New("unknown public key")
		},
	}
	cfg.AddHostKey(t.hostSigner)
	return cfg
}

// serve accepts until the listener is closed; Wait in the caller drains connections.
func (t *tsaServer) serve(ctx context.Context, ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.handleConn(ctx, nc)
		}()
	}
}

// tsaConn is one worker connection with its reverse forwards, keyed by the requested bind address.
type tsaConn struct {
	conn     *ssh.ServerConn
	mu       sync.Mutex
	forwards map[string]int // "0.0.0.0:7777" → bound port on this host
	changed  chan struct{}  // closed and replaced whenever forwards changes
}

func (t *tsaServer) handleConn(ctx context.Context, nc net.Conn) {
	sconn, chans, reqs, err := ssh.NewServerConn(nc, t.config())
	if err != nil {
		t.log.Error("tsa.connection.handshake-failed", err, logData{"remote": nc.RemoteAddr().String()})
		nc.Close()
		return
	}
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// Closing the context on shutdown also closes the connection, which ends the loops below.
		<-connCtx.Done()
		sconn.Close()
	}()
	c := &tsaConn{conn: sconn, forwards: map[string]int{}, changed: make(chan struct{})}
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()

	go func() {
		for ch := range chans {
			if ch.ChannelType() != "session" {
				ch.Reject(ssh.UnknownChannelType, "unknown channel type")
				continue
			}
			go t.handleSession(connCtx, c, ch)
		}
	}()

	for req := range reqs {
		switch {
		case req.Type == "tcpip-forward":
			l, err := t.forward(c, req.Payload)
			if err != nil {
				t.log.Error("tsa.connection.forward-failed", err, nil)
				req.Reply(false, nil)
				continue
			}
			listeners = append(listeners, l)
			port := uint32(l.Addr().(*net.TCPAddr).Port)
			req.Reply(true, ssh.Marshal(struct{ BoundPort uint32 }{port}))
		case strings.Contains(req.Type, "keepalive"):
			req.Reply(true, nil)
		default:
			req.Reply(false, nil)
		}
	}
}

type forwardRequest struct {
	BindIP   string
	BindPort uint32
}

// forward opens the local end of a reverse forward and proxies accepted connections back to the
// worker over forwarded-tcpip channels. At most two per connection (Garden and Baggageclaim).
func (t *tsaServer) forward(c *tsaConn, payload []byte) (net.Listener, error) {
	var req forwardRequest
	if err := ssh.Unmarshal(payload, &req); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.forwards) >= 2 {
		return nil, errors.New("too many forwards")
	}
	// The real TSA listens on 0.0.0.0:0; loopback keeps the fake inside the test's network rules.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	bound := l.Addr().(*net.TCPAddr).Port
	c.forwards[net.JoinHostPort(req.BindIP, strconv.Itoa(int(req.BindPort)))] = bound
	close(c.changed)
	c.changed = make(chan struct{})
	go func() {
		for {
			local, err := l.Accept()
			if err != nil {
				return
			}
			go proxyForward(c.conn, local, req)
		}
	}()
	return l, nil
}

func proxyForward(conn *ssh.ServerConn, local net.Conn, req forwardRequest) {
	defer local.Close()
	origin := local.RemoteAddr().(*net.TCPAddr)
	ch, reqs, err := conn.OpenChannel("forwarded-tcpip", ssh.Marshal(struct {
		Addr       string
		Port       uint32
		OriginAddr string
		OriginPort uint32
	}{req.BindIP, req.BindPort, origin.IP.String(), uint32(origin.Port)}))
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	go func() {
		io.Copy(ch, local)
		ch.CloseWrite()
	}()
	io.Copy(local, ch)
}

// waitForwards waits (bounded) until all addrs have been forwarded, returning their bound ports.
func (c *tsaConn) waitForwards(ctx context.Context, addrs []string, limit time.Duration) ([]int, error) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ports := make([]int, 0, len(addrs))
		for _, a := range addrs {
			if p, ok := c.forwards[a]; ok {
				ports = append(ports, p)
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if len(ports) == len(addrs) {
			return ports, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, fmt.Errorf("timed out waiting for forwards %s", strings.Join(addrs, ", "))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// handleSession runs the exec/signal protocol of one session channel.
func (t *tsaServer) handleSession(ctx context.Context, c *tsaConn, newCh ssh.NewChannel) {
	ch, reqs, err := newCh.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	cmdCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	started := false
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				return
			}
			switch req.Type {
			case "exec":
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil || started {
					req.Reply(false, nil)
					continue
				}
				args := strings.Fields(p.Command)
				run, err := t.command(args)
				if err != nil {
					fmt.Fprintf(ch, "invalid command: %s", err)
					req.Reply(false, nil)
					return
				}
				started = true
				req.Reply(true, nil)
				go func() {
					defer close(done)
					status := uint32(0)
					if err := run(cmdCtx, c, ch, args[1:]); err != nil {
						if cmdCtx.Err() == nil {
							fmt.Fprintf(ch.Stderr(), "%s\n", err)
							status = 1
						}
					}
					ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
					ch.Close()
				}()
			case "signal":
				// Any signal cancels the running command (§6.2).
				cancel()
				if req.WantReply {
					req.Reply(true, nil)
				}
			default:
				req.Reply(false, nil)
			}
		case <-done:
			return
		}
	}
}

type tsaCommand func(ctx context.Context, c *tsaConn, ch ssh.Channel, args []string) error

func (t *tsaServer) command(args []string) (tsaCommand, error) {
	if len(args) == 0 {
		return nil, errors.New("unknown command: ")
	}
	switch args[0] {
	case "forward-worker":
		return t.forwardWorker, nil
	case "land-worker":
		return t.stateCommand(func(ctx context.Context, name string) error { return t.reg.setState(ctx, name, "landed") }), nil
	case "retire-worker", "delete-worker":
		return t.stateCommand(t.reg.remove), nil
	case "sweep-containers", "sweep-volumes":
		// Nothing to destroy: the fake worker has no containers or volumes.
		return func(ctx context.Context, c *tsaConn, ch ssh.Channel, args []string) error {
			if _, err := readWorker(ch); err != nil {
				return err
			}
			_, err := io.WriteString(ch, "[]\n")
			return err
		}, nil
	case "report-containers", "report-volumes":
		return func(ctx context.Context, c *tsaConn, ch ssh.Channel, args []string) error {
			_, err := readWorker(ch)
			return err
		}, nil
	}
	return nil, fmt.Errorf("unknown command: %s", args[0])
}

func readWorker(ch io.Reader) (workerInfo, error) {
	var w workerInfo
	if err := json.NewDecoder(ch).Decode(&w); err != nil {
		return w, fmt.Errorf("failed to read worker json: %s", err)
	}
	return w, nil
}

// stateCommand is land/retire/delete: read the worker, change its record, exit.
func (t *tsaServer) stateCommand(apply func(context.Context, string) error) tsaCommand {
	return func(ctx context.Context, c *tsaConn, ch ssh.Channel, args []string) error {
		w, err := readWorker(ch)
		if err != nil {
			return err
		}
		if err := apply(ctx, w.Name); err != nil {
			return fmt.Errorf("%s: %w", w.Name, err)
		}
		t.log.Info("tsa.connection.channel.command.done", logData{"command": args, "worker": w.Name})
		return nil
	}
}

// forwardWorker registers the worker once both forwards exist and heartbeats until cancelled.
func (t *tsaServer) forwardWorker(ctx context.Context, c *tsaConn, ch ssh.Channel, args []string) error {
	var garden, baggageclaim string
	for i := 0; i+1 < len(args); i += 2 {
		switch args[i] {
		case "--garden":
			garden = args[i+1]
		case "--baggageclaim":
			baggageclaim = args[i+1]
		}
	}
	w, err := readWorker(ch)
	if err != nil {
		return err
	}
	var want []string
	for _, a := range []string{garden, baggageclaim} {
		if a != "" {
			want = append(want, a)
		}
	}
	ports, err := c.waitForwards(ctx, want, 10*time.Second)
	if err != nil {
		return err
	}
	i := 0
	if garden != "" {
		w.Addr = net.JoinHostPort(t.peerAddr, strconv.Itoa(ports[i]))
		i++
	}
	if baggageclaim != "" {
		w.BaggageclaimURL = "http://" + net.JoinHostPort(t.peerAddr, strconv.Itoa(ports[i]))
	}
	if err := t.reg.register(ctx, w); err != nil {
		return fmt.Errorf("failed to register worker: %s", err)
	}
	t.log.Info("tsa.connection.channel.forward-worker.register.done", logData{"worker-name": w.Name, "worker-address": w.Addr})
	enc := json.NewEncoder(ch)
	if err := enc.Encode(map[string]string{"event": "registered"}); err != nil {
		return err
	}
	tick := time.NewTicker(t.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if err := t.reg.heartbeat(ctx, w.Name); err != nil {
				return fmt.Errorf("failed to heartbeat: %s", err)
			}
			if err := enc.Encode(map[string]string{"event": "heartbeated"}); err != nil {
				return err
			}
		}
	}
}
