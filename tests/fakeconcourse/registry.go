package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"
)

// workerInfo is atc.Worker as it travels over the TSA session and out of /api/v1/workers (§6.1, §6.2).
type workerInfo struct {
	Addr             string               `json:"addr"`
	BaggageclaimURL  string               `json:"baggageclaim_url"`
	HTTPProxyURL     string               `json:"http_proxy_url,omitempty"`
	HTTPSProxyURL    string               `json:"https_proxy_url,omitempty"`
	NoProxy          string               `json:"no_proxy,omitempty"`
	ActiveContainers int                  `json:"active_containers"`
	ActiveVolumes    int                  `json:"active_volumes"`
	ActiveTasks      int                  `json:"active_tasks"`
	ResourceTypes    []workerResourceType `json:"resource_types"`
	Platform         string               `json:"platform"`
	Tags             []string             `json:"tags"`
	Team             string               `json:"team"`
	Name             string               `json:"name"`
	Version          string               `json:"version"`
	StartTime        int64                `json:"start_time"`
	Ephemeral        bool                 `json:"ephemeral"`
	State            string               `json:"state"`
}

type workerResourceType struct {
	Type                 string `json:"type"`
	Image                string `json:"image"`
	Version              string `json:"version"`
	Privileged           bool   `json:"privileged"`
	UniqueVersionHistory bool   `json:"unique_version_history"`
}

// registry keeps workers and tokens in PostgreSQL, as the real web does, so that every web node on
// the same database sees the same workers and a token survives a web restart.
type registry struct {
	db  *sql.DB
	ttl time.Duration // a worker not heard from for ttl is stalled (2 × heartbeat interval)
}

var errNoWorker = errors.New("worker not found")

func (r *registry) register(ctx context.Context, w workerInfo) error {
	w.State = "running"
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	_, err = r.db.ExecContext(ctx, `INSERT INTO workers (name, data, state, ephemeral, expires)
		VALUES ($1, $2, 'running', $3, now() + $4 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET data = EXCLUDED.data, state = 'running', ephemeral = EXCLUDED.ephemeral, expires = EXCLUDED.expires`,
		w.Name, data, w.Ephemeral, r.ttl.Microseconds())
	return sqlError(err)
}

// heartbeat extends the TTL without touching the state, so a landed worker stays landed.
func (r *registry) heartbeat(ctx context.Context, name string) error {
	res, err := r.db.ExecContext(ctx, `UPDATE workers SET expires = now() + $2 * interval '1 microsecond' WHERE name = $1`, name, r.ttl.Microseconds())
	return oneRow(res, err)
}

func (r *registry) setState(ctx context.Context, name, state string) error {
	res, err := r.db.ExecContext(ctx, `UPDATE workers SET state = $2 WHERE name = $1`, name, state)
	return oneRow(res, err)
}

func (r *registry) remove(ctx context.Context, name string) error {
	res, err := r.db.ExecContext(ctx, `DELETE FROM workers WHERE name = $1`, name)
	return oneRow(res, err)
}

func oneRow(res sql.Result, err error) error {
	if err != nil {
		return sqlError(err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errNoWorker
	}
	return nil
}

// list reports each worker with its effective state: a running worker past its TTL is stalled,
// and an ephemeral one is removed instead (§3.1 CONCOURSE_EPHEMERAL).
func (r *registry) list(ctx context.Context) ([]workerInfo, error) {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM workers WHERE ephemeral AND state = 'running' AND expires < now()`); err != nil {
		return nil, sqlError(err)
	}
	rows, err := r.db.QueryContext(ctx, `SELECT data, CASE WHEN state = 'running' AND expires < now() THEN 'stalled' ELSE state END FROM workers ORDER BY name`)
	if err != nil {
		return nil, sqlError(err)
	}
	defer rows.Close()
	out := []workerInfo{}
	for rows.Next() {
		var data []byte
		var state string
		if err := rows.Scan(&data, &state); err != nil {
			return nil, err
		}
		var w workerInfo
		if err := json.Unmarshal(data, &w); err != nil {
			return nil, err
		}
		w.State = state
		out = append(out, w)
	}
	return out, rows.Err()
}

type tokenClaims struct {
	Sub     string `json:"sub"`
	Exp     int64  `json:"exp"`
	IsAdmin bool   `json:"is_admin"`
}

// issueToken stores an opaque random token, like the real access_tokens table does.
func (r *registry) issueToken(ctx context.Context, c tokenClaims) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(b)
	claims, _ := json.Marshal(c)
	_, err := r.db.ExecContext(ctx, `INSERT INTO access_tokens (token, claims) VALUES ($1, $2)`, tok, claims)
	return tok, sqlError(err)
}

func (r *registry) lookupToken(ctx context.Context, tok string) (tokenClaims, bool, error) {
	var raw []byte
	err := r.db.QueryRowContext(ctx, `SELECT claims FROM access_tokens WHERE token = $1`, tok).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return tokenClaims{}, false, nil
	}
	if err != nil {
		return tokenClaims{}, false, sqlError(err)
	}
	var c tokenClaims
	if err := json.Unmarshal(raw, &c); err != nil {
		return tokenClaims{}, false, err
	}
	return c, c.Exp > time.Now().Unix(), nil
}
