package concourse

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lib/pq"
)

// Concourse encrypts the sensitive columns of its database (pipeline, job and resource configs,
// var sources, team auth) with AES-GCM under --encryption-key: the column holds the hex of the
// sealed text and the row's `nonce` column the hex of its 12-byte nonce; a NULL nonce means the
// row is plain (atc/db/encryption). At every start the web encrypts plain rows with the new key,
// re-encrypts rows from --old-encryption-key to the new key, or decrypts them when only the old
// key is given. Given a key that opens none of the rows, it starts and fails on every read
// ("cipher: message authentication failed"): the check below refuses that before a restart.

// ValidEncryptionKey says whether key is usable as --encryption-key: AES-128 or AES-256, so 16 or
// 32 bytes (the real web refuses any other length at start).
func ValidEncryptionKey(key string) bool { return len(key) == 16 || len(key) == 32 }

// EncryptionProblem is what CheckEncryptionKeys found wrong; the hooks turn it into a status
// saying how to rotate. It never carries a key.
type EncryptionProblem struct {
	Table string // a table holding a row no given key opens
	// NoKey is true when no key at all was given for an encrypted database; otherwise the keys
	// given open none of its encrypted rows.
	NoKey bool
}

func (e *EncryptionProblem) Error() string {
	if e.NoKey {
		return fmt.Sprintf("the database is encrypted (table %s) and no encryption key is set", e.Table)
	}
	return fmt.Sprintf("the database holds rows (table %s) that neither the encryption key nor the old encryption key decrypts", e.Table)
}

// encryptedColumns are the columns Concourse seals with the row's nonce, by table. A table not
// yet created (an older schema) is skipped.
var encryptedColumns = []struct{ table, column string }{
	{"pipelines", "var_sources"},
	{"jobs", "config"},
	{"resources", "config"},
	{"resource_types", "config"},
	{"prototypes", "config"},
	{"teams", "legacy_auth"},
	{"builds", "private_plan"},
	{"cert_cache", "cert"},
}

// dexNonceTables are dex's tables (the login's OAuth state): their nonce column is the OIDC
// nonce, nothing Concourse encrypts.
var dexNonceTables = []string{"auth_code", "auth_request", "refresh_token", "device_request", "device_token"}

// CheckEncryptionKeys says whether a web started with newKey and oldKey ("" = not given) can read
// the database c: every table's encrypted rows must open under one of the keys. It samples a
// few rows per table (a rotation rewrites every row in one transaction, so rows of one table do
// not mix keys). nil means it can; *EncryptionProblem means it cannot; any other error means the
// check could not run.
func CheckEncryptionKeys(ctx context.Context, c DBConfig, newKey, oldKey string, timeout time.Duration) error {
	var aeads []cipher.AEAD
	for _, k := range []string{newKey, oldKey} {
		if k == "" {
			continue
		}
		a, err := gcmOf(k)
		if err != nil {
			return err
		}
		aeads = append(aeads, a)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pq.NewConnector(c.DSN(timeout))
	if err != nil {
		return redactedError{err, c.Password}
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, tc := range encryptedColumns {
		var exists bool
		err := db.QueryRowContext(ctx, `SELECT count(*) = 2 FROM information_schema.columns
 WHERE table_schema = current_schema() AND table_name = $1 AND column_name IN ($2, 'nonce')`, tc.table, tc.column).Scan(&exists)
		if err != nil {
			return fmt.Errorf("checking the encryption of table %s: %w", tc.table, redactedError{err, c.Password})
		}
		if !exists {
			continue
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf(`SELECT %s, nonce FROM %s WHERE nonce IS NOT NULL AND %s IS NOT NULL LIMIT 3`,
			pq.QuoteIdentifier(tc.column), pq.QuoteIdentifier(tc.table), pq.QuoteIdentifier(tc.column)))
		if err != nil {
			return fmt.Errorf("reading table %s: %w", tc.table, redactedError{err, c.Password})
		}
		var sealed [][2]string
		for rows.Next() {
			var text, nonce string
			if err := rows.Scan(&text, &nonce); err != nil {
				rows.Close()
				return fmt.Errorf("reading table %s: %w", tc.table, err)
			}
			sealed = append(sealed, [2]string{text, nonce})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("reading table %s: %w", tc.table, redactedError{err, c.Password})
		}
		for _, s := range sealed {
			if len(aeads) == 0 {
				return &EncryptionProblem{Table: tc.table, NoKey: true}
			}
			if !opensWithAny(aeads, s[0], s[1]) {
				return &EncryptionProblem{Table: tc.table}
			}
		}
	}
	return nil
}

// EncryptedColumn names the column of table that CheckEncryptionKeys samples, "" for none;
// dex is true for dex's tables, whose nonce is not Concourse's.
func EncryptedColumn(table string) (column string, dex bool) {
	for _, tc := range encryptedColumns {
		if tc.table == table {
			return tc.column, false
		}
	}
	return "", slices.Contains(dexNonceTables, table)
}

func gcmOf(key string) (cipher.AEAD, error) {
	if !ValidEncryptionKey(key) {
		return nil, errors.New("an encryption key must be 16 or 32 characters long")
	}
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func opensWithAny(aeads []cipher.AEAD, text, nonce string) bool {
	ct, err1 := hex.DecodeString(text)
	n, err2 := hex.DecodeString(nonce)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, a := range aeads {
		if len(n) != a.NonceSize() {
			continue
		}
		if _, err := a.Open(nil, n, ct, nil); err == nil {
			return true
		}
	}
	return false
}

// Decrypt opens one sealed column value with key; tests use it to prove what the real web wrote.
func Decrypt(key, text, nonce string) ([]byte, error) {
	a, err := gcmOf(key)
	if err != nil {
		return nil, err
	}
	ct, err := hex.DecodeString(text)
	if err != nil {
		return nil, fmt.Errorf("sealed text is not hex: %w", err)
	}
	n, err := hex.DecodeString(nonce)
	if err != nil {
		return nil, fmt.Errorf("nonce is not hex: %w", err)
	}
	return a.Open(nil, n, ct, nil)
}
