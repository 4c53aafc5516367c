package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// runMigrate follows the §5 table, in the real command's order of precedence.
func runMigrate(c cmdEnv, args []string) error {
	o, err := parseOptions(migrateOptions(), args, c.env, c.flavour)
	if err != nil {
		return err
	}
	if o.boolean("supported-db-version") {
		// Needs no database: works with the DB down or a wrong password (§5).
		fmt.Fprintln(c.stdout, c.flavour.supportedDBVersion())
		return nil
	}
	target := o.integer("migrate-db-to-version")
	rotate := o.vals["old-encryption-key"] != nil || o.vals["old-encryption-key-base64"] != nil || o.vals["old-encryption-key-hex"] != nil
	if !o.boolean("current-db-version") && !o.boolean("migrate-to-latest-version") && target <= 0 && !rotate {
		return errors.New("must specify one of `--migrate-to-latest-version`, `--current-db-version`, `--supported-db-version`, `--migrate-db-to-version`, or `--old-encryption-key`")
	}

	ctx := context.Background()
	cfg := pgConfigFrom(o)
	db, err := openDB(ctx, cfg, 2)
	if err != nil {
		return err
	}
	defer db.Close()

	switch {
	case o.boolean("current-db-version"):
		v, err := currentDBVersion(ctx, db, c.flavour)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, v)
	case o.boolean("migrate-to-latest-version"):
		return withMigrationLock(ctx, db, func(conn *sql.Conn) error { return migrateToLatest(ctx, conn, c.flavour) })
	case target > 0:
		if err := withMigrationLock(ctx, db, func(conn *sql.Conn) error { return migrateTo(ctx, conn, c.flavour, target) }); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "Successfully migrated to version: %d\n", target)
	default:
		// Key rotation: the fake stores nothing encrypted, so there is nothing to rewrite, but the
		// database must still be reachable, as for the real command.
		return withMigrationLock(ctx, db, func(*sql.Conn) error { return nil })
	}
	return nil
}
