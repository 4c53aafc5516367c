package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"
)

func TestCluster(t *testing.T) {
	c := Start(t, Options{})
	if c.Host() != "127.0.0.1" || c.Port() <= 0 {
		t.Fatalf("Host, Port = %q, %d; want 127.0.0.1 and a port", c.Host(), c.Port())
	}
	c.CreateRole(t, "concourse", "s3cret 'quoted'")
	c.CreateDatabase(t, "atc", "concourse")

	ping := func(user, pass, db string) error {
		d, err := sql.Open("postgres", c.DSN(user, pass, db))
		if err != nil {
			return err
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return d.PingContext(ctx)
	}
	if err := ping("concourse", "s3cret 'quoted'", "atc"); err != nil {
		t.Fatalf("connecting with the right password: %v", err)
	}
	// Host connections must really check passwords (scram), not trust.
	err := ping("concourse", "wrong", "atc")
	if pe := (*pq.Error)(nil); !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("connecting with a wrong password: %v; want SQLSTATE 28P01", err)
	}
}
