package concourse

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"
)

const (
	// DefaultKeyBits matches `concourse generate-key` (contract §4).
	DefaultKeyBits = 4096
	// minKeyBits: Go refuses < 1024 and anything below 2048 is weak; tests use
	// 2048 because 4096-bit generation takes seconds.
	minKeyBits = 2048
)

// GenerateKey makes an RSA key in the canonical form Concourse and ssh-keygen
// both read: PEM "RSA PRIVATE KEY" around PKCS#1 DER (contract §4; never the
// OpenSSH format, which Concourse rejects). pubLine is the authorized_keys
// line "ssh-rsa AAAA…" without a trailing newline.
//
// random is handed to crypto/rsa; since Go 1.24 crypto/rsa ignores it (it
// always uses the system CSPRNG), so output is random even with a fixed
// reader. Tests therefore check structure, not bytes.
func GenerateKey(random io.Reader, bits int) (privPEM []byte, pubLine string, err error) {
	if bits < minKeyBits {
		return nil, "", fmt.Errorf("RSA key size %d is too small: use at least %d bits", bits, minKeyBits)
	}
	k, err := rsa.GenerateKey(random, bits)
	if err != nil {
		return nil, "", fmt.Errorf("generating a %d-bit RSA key: %w", bits, err)
	}
	privPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	pubLine, err = publicLine(&k.PublicKey)
	if err != nil {
		return nil, "", err
	}
	return privPEM, pubLine, nil
}

func publicLine(k *rsa.PublicKey) (string, error) {
	pub, err := ssh.NewPublicKey(k)
	if err != nil {
		return "", fmt.Errorf("encoding the SSH public key: %w", err)
	}
	return strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n"), nil
}

// ParsePrivateKey reads an RSA private key the way Concourse does
// (jwt.ParseRSAPrivateKeyFromPEM, contract §4): the first PEM block, PKCS#1
// or PKCS#8, whatever its label (generate-key labels PKCS#1 "PRIVATE KEY").
func ParsePrivateKey(privPEM []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(privPEM)
	if block == nil {
		if bytes.Contains(privPEM, []byte("OPENSSH PRIVATE KEY")) {
			return nil, errors.New("key is in OpenSSH format, which Concourse rejects: it needs a PEM RSA key (PKCS#1 or PKCS#8)")
		}
		return nil, errors.New("key is not PEM encoded: Concourse needs a PEM RSA key (PKCS#1 or PKCS#8)")
	}
	if block.Type == "OPENSSH PRIVATE KEY" {
		return nil, errors.New("key is in OpenSSH format, which Concourse rejects: it needs a PEM RSA key (PKCS#1 or PKCS#8)")
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted {
		return nil, errors.New("key is encrypted: Concourse needs an unencrypted PEM RSA key")
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key (PEM %q) is neither PKCS#1 nor PKCS#8: %w", block.Type, err)
	}
	k, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is a %T, not RSA: Concourse accepts only RSA keys", parsed)
	}
	return k, nil
}

// PublicKeyLine returns the "ssh-rsa AAAA…" line (no newline) of a PEM RSA
// private key in PKCS#1 or PKCS#8 form.
func PublicKeyLine(privPEM []byte) (string, error) {
	k, err := ParsePrivateKey(privPEM)
	if err != nil {
		return "", err
	}
	return publicLine(&k.PublicKey)
}

// EnsureKey makes sure path holds a valid RSA private key (mode 0600, owned
// by uid:gid; -1 leaves an id as it is) and path+".pub" its public line
// (0644, same owner), and returns that line.
//
// An existing valid key is never replaced: the TSA host key and the worker
// keys are trusted by other units, so regenerating one silently would break
// every worker. An existing key that does not parse is an error naming the
// path, for the same reason: an operator must decide. Both files are written
// with WriteFileAtomic, so a crash leaves either no key or a whole one; a
// missing or stale .pub is rewritten from the key.
func EnsureKey(path string, bits int, uid, gid int) (pub string, created bool, err error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		pub, err = PublicKeyLine(data)
		if err != nil {
			return "", false, fmt.Errorf("existing key %s is unusable (%v): move it away to have a new one generated", path, err)
		}
		if err := fixModeOwner(path, 0o600, uid, gid); err != nil {
			return "", false, err
		}
	case errors.Is(err, fs.ErrNotExist):
		priv, line, err := GenerateKey(rand.Reader, bits)
		if err != nil {
			return "", false, err
		}
		if _, err := WriteFileAtomic(path, priv, 0o600, uid, gid); err != nil {
			return "", false, err
		}
		pub, created = line, true
	default:
		return "", false, fmt.Errorf("reading key %s: %w", path, err)
	}
	if _, err := WriteFileAtomic(path+".pub", []byte(pub+"\n"), 0o644, uid, gid); err != nil {
		return "", false, err
	}
	return pub, created, nil
}

// fixModeOwner tightens an existing file in place; a private key with loose
// permissions or the wrong owner (web must read its keys as "concourse") is
// repaired without touching its content.
func fixModeOwner(path string, perm os.FileMode, uid, gid int) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if st.Mode().Perm() != perm.Perm() {
		if err := os.Chmod(path, perm.Perm()); err != nil {
			return fmt.Errorf("setting mode of %s: %w", path, err)
		}
	}
	if !ownerMatches(st, uid, gid) {
		if err := os.Chown(path, uid, gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", path, err)
		}
	}
	return nil
}

func ownerMatches(st os.FileInfo, uid, gid int) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return uid == -1 && gid == -1
	}
	return (uid == -1 || int(sys.Uid) == uid) && (gid == -1 || int(sys.Gid) == gid)
}

// WriteFileAtomic writes data to path so that readers see the old content or
// the new, never a mix, and never with umask permissions: a temporary file in
// the same directory gets perm (exactly, umask ignored), owner uid:gid, the
// data and an fsync, then replaces path with rename(2), and the directory is
// fsynced so the rename survives a crash.
//
// uid or gid -1 means "leave": keep the existing file's id, or the process's
// for a new file. When content, mode and owner already match, nothing is
// written and changed is false, so callers can restart a service only when
// its configuration really changed. Only permission bits of perm are used.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, uid, gid int) (changed bool, err error) {
	perm = perm.Perm()
	if st, err := os.Lstat(path); err == nil {
		if st.Mode().IsRegular() && st.Mode().Perm() == perm && ownerMatches(st, uid, gid) && int64(len(data)) == st.Size() {
			old, err := os.ReadFile(path)
			if err == nil && bytes.Equal(old, data) {
				return false, nil
			}
		}
		// Keep the existing owner for ids the caller leaves alone.
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && st.Mode().IsRegular() {
			if uid == -1 {
				uid = int(sys.Uid)
			}
			if gid == -1 {
				gid = int(sys.Gid)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("checking %s: %w", path, err)
	}

	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Mode and owner before the data: a secret is never readable by others,
	// not even for an instant.
	if err := tmp.Chmod(perm); err != nil {
		return false, fmt.Errorf("writing %s: setting mode: %w", path, err)
	}
	if uid != -1 || gid != -1 {
		if err := tmp.Chown(uid, gid); err != nil {
			return false, fmt.Errorf("writing %s: setting owner %d:%d: %w", path, uid, gid, err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("writing %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("writing %s: %w", path, err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return true, fmt.Errorf("writing %s: %w", path, err)
	}
	return true, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync of directory %s: %w", dir, err)
	}
	return nil
}
