package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// runWorker follows contract §9.5: parse, runtime cross-check, root check, work dir, health
// endpoint, then a beacon that registers over SSH and never gives up.
func runWorker(c cmdEnv, args []string) error {
	o, err := parseOptions(workerOptions(c.flavour), args, c.env, c.flavour)
	if err != nil {
		return err
	}
	runtime := o.str("runtime")
	if err := checkLeftoverRuntimeEnv(c.env, runtime); err != nil {
		return err
	}
	if os.Geteuid() != 0 && c.env.get("FAKE_CONCOURSE_ALLOW_NONROOT") != "1" {
		return errors.New("worker must be run as root")
	}
	workDir := o.str("work-dir")
	dirs := []string{"volumes"}
	switch runtime {
	case "guardian":
		dirs = append(dirs, "depot")
	case "houdini":
		dirs = append(dirs, "containers")
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(workDir, d), 0o755); err != nil {
			return err
		}
	}
	prefix := assetPrefix()
	if runtime == "containerd" && o.str("containerd-cni-plugins-dir") == "" {
		if st, err := os.Stat(filepath.Join(prefix, "bin")); err != nil || !st.IsDir() {
			return errors.New("could not find CNI Plugins dir. Try setting the --containerd-cni-plugins-dir flag")
		}
	}
	log := newLogger(c.stdout, "worker", parseLevel(o.str("log-level")))

	w, err := workerJSON(o, prefix)
	if err != nil {
		return err
	}

	healthAddr := o.hostPort("healthcheck-bind-ip", "healthcheck-bind-port")
	healthLn, err := net.Listen("tcp", healthAddr)
	if err != nil {
		return fmt.Errorf("Exit trace for group:\nhealthcheck exited with error: %s\n", err)
	}
	health := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		// Garden and Baggageclaim are "up" as far as the fake goes: 200 with an empty body.
		if r.URL.Path != "/" {
			http.NotFound(rw, r)
			return
		}
		rw.WriteHeader(http.StatusOK)
	})}
	go health.Serve(healthLn)
	defer health.Close()
	log.Info("worker.healthchecker.listening", logData{"addr": healthLn.Addr().String()})
	stopGarden, err := serveGarden(o.hostPort("bind-ip", "bind-port")) // garden.go
	if err != nil {
		return err
	}
	defer stopGarden()
	log.Info("worker.garden.started", logData{"runtime": runtime})
	log.Info("worker.baggageclaim.listening", logData{"addr": o.hostPort("baggageclaim-bind-ip", "baggageclaim-bind-port")})

	b, err := newBeacon(c, o, log, w)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(ctx)
	}()

	sig := <-sigs
	switch sig {
	case syscall.SIGUSR1:
		// Land (keep the registration, for restarts) then exit 0 (§7).
		if err := b.runCommand(context.Background(), "land-worker"); err != nil {
			log.Error("worker.beacon-runner.land-failed", err, nil)
		}
	case syscall.SIGUSR2:
		if err := b.runCommand(context.Background(), "retire-worker"); err != nil {
			log.Error("worker.beacon-runner.retire-failed", err, nil)
		}
	}
	cancel()
	<-done
	return nil
}

// checkLeftoverRuntimeEnv is §3.1's cross-check: only variables the parser did not recognise (and
// so did not unset) count.
func checkLeftoverRuntimeEnv(env *environment, runtime string) error {
	garden := len(env.withPrefix("CONCOURSE_GARDEN_")) > 0
	containerd := len(env.withPrefix("CONCOURSE_CONTAINERD_")) > 0
	switch {
	case runtime == "containerd" && garden:
		return errors.New("cannot use CONCOURSE_GARDEN_ environment variables with Containerd")
	case runtime == "guardian" && containerd:
		return errors.New("cannot use CONCOURSE_CONTAINERD_ environment variables with Guardian")
	case runtime == "houdini" && (garden || containerd):
		return errors.New("cannot use CONCOURSE_GARDEN_ or CONCOURSE_CONTAINERD_ environment variables with Houdini")
	}
	return nil
}

// workerJSON is the atc.Worker a real worker sends to forward-worker (§6.2).
func workerJSON(o *parsed, prefix string) (workerInfo, error) {
	name := o.str("name")
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return workerInfo{}, fmt.Errorf("failed to get hostname: %s", err)
		}
		name = h
	}
	typesDir := o.str("resource-types")
	if typesDir == "" {
		typesDir = filepath.Join(prefix, "resource-types")
	}
	types, err := resourceTypes(typesDir)
	if err != nil {
		return workerInfo{}, err
	}
	return workerInfo{
		Name: name, Tags: nonEmpty(o.strs("tag")), Team: o.str("team"), Platform: "linux", Version: "2.5",
		StartTime: time.Now().Unix(), Ephemeral: o.boolean("ephemeral"), ResourceTypes: types,
		HTTPProxyURL: o.str("http-proxy"), HTTPSProxyURL: o.str("https-proxy"), NoProxy: strings.Join(o.strs("no-proxy"), ","),
	}, nil
}

// resourceTypes reads <dir>/*/resource_metadata.json; image is the sibling rootfs.tgz. A missing
// directory means no bundled types, as on darwin builds.
func resourceTypes(dir string) ([]workerResourceType, error) {
	matches, err := filepath.Glob(filepath.Join(dir, "*", "resource_metadata.json"))
	if err != nil {
		return nil, err
	}
	types := []workerResourceType{}
	for _, m := range matches {
		blob, err := os.ReadFile(m)
		if err != nil {
			return nil, fmt.Errorf("failed to read resource type metadata: %s", err)
		}
		var t workerResourceType
		if err := json.Unmarshal(blob, &t); err != nil {
			return nil, fmt.Errorf("failed to parse resource type metadata %s: %s", m, err)
		}
		t.Image = filepath.Join(filepath.Dir(m), "rootfs.tgz")
		types = append(types, t)
	}
	return types, nil
}

// beacon is the worker side of the TSA protocol (tsa/client.go in the real tree).
type beacon struct {
	log          logger
	hosts        []string
	hostKeys     []ssh.PublicKey
	signer       ssh.Signer
	worker       workerInfo
	garden       string // requested forward bind addresses
	baggageclaim string
	gardenLocal  string // where forwarded connections are delivered
	bcLocal      string
	retry        time.Duration
}

func newBeacon(c cmdEnv, o *parsed, log logger, w workerInfo) (*beacon, error) {
	signer, err := ssh.NewSignerFromKey(o.key("tsa-worker-private-key"))
	if err != nil {
		return nil, fmt.Errorf("failed to create worker key signer: %s", err)
	}
	retry := 5 * time.Second
	if v, ok := c.env.lookup("FAKE_CONCOURSE_RETRY"); ok {
		if d, err := time.ParseDuration(v); err == nil {
			retry = d
		}
	}
	b := &beacon{
		log: log, hosts: nonEmpty(o.strs("tsa-host")), hostKeys: o.authKeys("tsa-public-key"),
		signer: signer, worker: w, retry: retry,
	}
	if _, ok := o.vals["bind-port"]; ok {
		b.garden = "0.0.0.0:" + strconv.FormatInt(o.integer("bind-port"), 10)
		b.baggageclaim = "0.0.0.0:" + strconv.FormatInt(o.integer("baggageclaim-bind-port"), 10)
		b.gardenLocal = o.hostPort("bind-ip", "bind-port")
		b.bcLocal = o.hostPort("baggageclaim-bind-ip", "baggageclaim-bind-port")
	}
	return b, nil
}

// run registers, and after any failure logs it, waits retry (5 s) and starts again: the real
// worker never exits on registration failure (§3.2).
func (b *beacon) run(ctx context.Context) {
	for {
		err := b.forwardWorker(ctx)
		if ctx.Err() != nil {
			return
		}
		b.log.Error("worker.beacon-runner.failed", err, nil)
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.retry):
		}
		b.log.Info("worker.beacon-runner.restarting", nil)
	}
}

// dial tries the TSA hosts in random order (§3.1 "one is picked at random per dial").
func (b *beacon) dial() (*ssh.Client, error) {
	cfg := &ssh.ClientConfig{
		User: "beacon",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(b.signer)},
		// Exact key match, hostname not checked; no keys at all means every handshake fails.
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			for _, k := range b.hostKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return nil
				}
			}
			return errors.New("remote host public key mismatch")
		},
		Timeout: 10 * time.Second,
	}
	for _, i := range rand.Perm(len(b.hosts)) {
		host := b.hosts[i]
		conn, err := net.DialTimeout("tcp", host, 10*time.Second)
		if err != nil {
			b.log.Error("worker.beacon-runner.beacon.failed-to-connect-to-tsa", err, logData{"host": host})
			continue
		}
		// Bound the handshake too; ssh.NewClientConn has no timeout of its own.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		sc, chans, reqs, err := ssh.NewClientConn(conn, host, cfg)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("failed to establish SSH connection with gateway: %s", err)
		}
		conn.SetDeadline(time.Time{})
		return ssh.NewClient(sc, chans, reqs), nil
	}
	return nil, errors.New("all worker SSH gateways unreachable")
}

// keepalive sends the global request every 5 s and closes the client when it fails, which ends
// whatever session is running on it.
func keepalive(ctx context.Context, client *ssh.Client) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, _, err := client.SendRequest("keepalive", true, nil); err != nil {
				client.Close()
				return
			}
		}
	}
}

func (b *beacon) forwardWorker(ctx context.Context) error {
	client, err := b.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go keepalive(ctx, client)

	cmd := "forward-worker"
	if b.garden != "" {
		for _, f := range []struct{ remote, local string }{{b.garden, b.gardenLocal}, {b.baggageclaim, b.bcLocal}} {
			l, err := client.Listen("tcp", f.remote)
			if err != nil {
				return fmt.Errorf("failed to forward %s: %s", f.remote, err)
			}
			defer l.Close()
			go deliver(l, f.local)
		}
		cmd += " --garden " + b.garden + " --baggageclaim " + b.baggageclaim
	}

	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("failed to open session: %s", err)
	}
	defer sess.Close()
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	if err := sess.Start(cmd); err != nil {
		return fmt.Errorf("failed to start %s: %s", cmd, err)
	}
	if err := json.NewEncoder(stdin).Encode(b.worker); err != nil {
		return fmt.Errorf("failed to send worker: %s", err)
	}

	go func() {
		// On SIGTERM the real client signals the remote command, then hangs up.
		<-ctx.Done()
		sess.Signal(ssh.SIGTERM)
		client.Close()
	}()
	dec := json.NewDecoder(stdout)
	for {
		var ev struct {
			Event string `json:"event"`
		}
		if err := dec.Decode(&ev); err != nil {
			break
		}
		switch ev.Event {
		case "registered":
			b.log.Info("worker.beacon-runner.beacon.registered", logData{"session": "4.1"})
		case "heartbeated":
			b.log.Debug("worker.beacon-runner.beacon.heartbeated", nil)
		}
	}
	err = sess.Wait()
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return fmt.Errorf("forward-worker ended: %s", msg)
	}
	if err != nil {
		return fmt.Errorf("forward-worker ended: %s", err)
	}
	return errors.New("forward-worker ended: connection to gateway closed")
}

// deliver hands forwarded connections to the local Garden/Baggageclaim address. The fake serves
// neither, so a connection normally just closes, which is what a dead backend looks like.
func deliver(l net.Listener, local string) {
	for {
		remote, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer remote.Close()
			lc, err := net.DialTimeout("tcp", local, 5*time.Second)
			if err != nil {
				return
			}
			defer lc.Close()
			go io.Copy(lc, remote)
			io.Copy(remote, lc)
		}()
	}
}

// runCommand runs land-worker/retire-worker/delete-worker in its own session and waits for it.
func (b *beacon) runCommand(ctx context.Context, command string) error {
	client, err := b.dial()
	if err != nil {
		return err
	}
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	var stderr bytes.Buffer
	sess.Stderr = &stderr
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	if err := sess.Start(command); err != nil {
		return fmt.Errorf("failed to start %s: %s", command, err)
	}
	if err := json.NewEncoder(stdin).Encode(b.worker); err != nil {
		return err
	}
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: timed out", command)
	}
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return fmt.Errorf("%s: %s", command, msg)
		}
		return fmt.Errorf("%s: %s", command, err)
	}
	b.log.Info("worker.beacon-runner.beacon."+command+".done", nil)
	return nil
}

// runLandOrRetire is the standalone `concourse land-worker` / `retire-worker`.
func runLandOrRetire(c cmdEnv, args []string, command string) error {
	opts := landRetireOptions(command)
	o, err := parseOptions(opts, args, c.env, c.flavour)
	if err != nil {
		return err
	}
	log := newLogger(c.stdout, "worker", levelInfo)
	b, err := newBeacon(c, o, log, workerInfo{Name: o.str("name"), Platform: "linux", Version: "2.5"})
	if err != nil {
		return err
	}
	return b.runCommand(context.Background(), command)
}
