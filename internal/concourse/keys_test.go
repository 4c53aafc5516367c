package concourse

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"
)

const testBits = 2048

func TestGenerateKey(t *testing.T) {
	t.Parallel()
	priv, pub, err := GenerateKey(rand.Reader, testBits)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(priv)
	if block == nil || block.Type != "RSA PRIVATE KEY" || len(rest) != 0 {
		t.Fatalf("private key is not one PEM block of type RSA PRIVATE KEY:\n%s", priv)
	}
	k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("not PKCS#1: %v", err)
	}
	if k.N.BitLen() != testBits {
		t.Errorf("key has %d bits; want %d", k.N.BitLen(), testBits)
	}
	if !strings.HasPrefix(pub, "ssh-rsa AAAA") || strings.ContainsAny(pub, "\n\r") {
		t.Errorf("public line %q is not a single ssh-rsa line", pub)
	}
	parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		t.Fatalf("public line does not parse as authorized_keys: %v", err)
	}
	want, _ := ssh.NewPublicKey(&k.PublicKey)
	if string(parsed.Marshal()) != string(want.Marshal()) {
		t.Error("public line does not match the private key")
	}
	// ssh-keygen and x/crypto/ssh must read it too (contract §4: canonical form).
	if _, err := ssh.ParsePrivateKey(priv); err != nil {
		t.Errorf("x/crypto/ssh cannot read the private key: %v", err)
	}
	if _, _, err := GenerateKey(rand.Reader, 1024); err == nil {
		t.Error("GenerateKey(1024) succeeded; want an error for a weak size")
	}
}

func TestPublicKeyLineFormats(t *testing.T) {
	t.Parallel()
	k, err := rsa.GenerateKey(rand.Reader, testBits)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(&k.PublicKey)
	wantLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edPKCS8, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	openssh, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	enc := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	for _, tc := range []struct {
		name string
		pem  []byte
		err  string
	}{
		{"pkcs1", enc("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)), ""},
		// `concourse generate-key` labels PKCS#1 "PRIVATE KEY" (contract §4).
		{"generate-key-label", enc("PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)), ""},
		{"pkcs8", enc("PRIVATE KEY", pkcs8), ""},
		{"openssh", pem.EncodeToMemory(openssh), "OpenSSH format"},
		{"ed25519", enc("PRIVATE KEY", edPKCS8), "not RSA"},
		{"public-line", []byte(wantLine), "not PEM"},
		{"garbage-pem", enc("RSA PRIVATE KEY", []byte("nonsense")), "neither PKCS#1 nor PKCS#8"},
		{"empty", nil, "not PEM"},
	} {
		got, err := PublicKeyLine(tc.pem)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: PublicKeyLine error = %v; want one containing %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != wantLine {
			t.Errorf("%s: PublicKeyLine = %q, %v; want %q", tc.name, got, err, wantLine)
		}
	}
}

func statOf(t *testing.T, path string) (os.FileMode, int, int) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return st.Mode().Perm(), int(sys.Uid), int(sys.Gid)
}

func TestEnsureKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "tsa_host_key")

	pub, created, err := EnsureKey(path, testBits, -1, -1)
	if err != nil || !created {
		t.Fatalf("EnsureKey (new) = %q, %v, %v; want created", pub, created, err)
	}
	if mode, _, _ := statOf(t, path); mode != 0o600 {
		t.Errorf("key mode = %o; want 600", mode)
	}
	if mode, _, _ := statOf(t, path+".pub"); mode != 0o644 {
		t.Errorf(".pub mode = %o; want 644", mode)
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != pub+"\n" {
		t.Errorf(".pub = %q; want %q", b, pub+"\n")
	}
	keyBytes, _ := os.ReadFile(path)

	// Second call: same key, nothing regenerated.
	pub2, created, err := EnsureKey(path, testBits, -1, -1)
	if err != nil || created || pub2 != pub {
		t.Fatalf("EnsureKey (existing) = %q, %v, %v; want the same key, not created", pub2, created, err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(keyBytes) {
		t.Fatal("EnsureKey rewrote an existing valid key")
	}

	// A lost or tampered .pub is restored from the key; loose permissions
	// are tightened.
	os.Remove(path + ".pub")
	os.Chmod(path, 0o644)
	if _, _, err := EnsureKey(path, testBits, -1, -1); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != pub+"\n" {
		t.Errorf("missing .pub not restored: %q", b)
	}
	if mode, _, _ := statOf(t, path); mode != 0o600 {
		t.Errorf("key mode after repair = %o; want 600", mode)
	}
	os.WriteFile(path+".pub", []byte("ssh-rsa AAAAother\n"), 0o644)
	if _, _, err := EnsureKey(path, testBits, -1, -1); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != pub+"\n" {
		t.Errorf("stale .pub not rewritten: %q", b)
	}

	// A corrupt key is an error naming the path, and is left alone.
	bad := filepath.Join(dir, "worker_key")
	os.WriteFile(bad, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600)
	_, _, err = EnsureKey(bad, testBits, -1, -1)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "OpenSSH") {
		t.Fatalf("EnsureKey on a corrupt key = %v; want an error naming %s and the problem", err, bad)
	}
	if b, _ := os.ReadFile(bad); !strings.Contains(string(b), "OPENSSH") {
		t.Error("corrupt key was replaced")
	}
	if _, err := os.Stat(bad + ".pub"); err == nil {
		t.Error("a .pub was written for a corrupt key")
	}

	// Nothing but the key and its .pub is left in the directory (no temp files).
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "tsa_host_key tsa_host_key.pub worker_key" {
		t.Errorf("directory holds %v", names)
	}
}

func TestEnsureKeyOwner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	path := filepath.Join(t.TempDir(), "session_signing_key")
	if _, _, err := EnsureKey(path, testBits, uid, gid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".pub"} {
		if _, gotU, gotG := statOf(t, p); gotU != uid || gotG != gid {
			t.Errorf("%s owned by %d:%d; want %d:%d", p, gotU, gotG, uid, gid)
		}
	}
	// An existing key with the wrong owner is repaired in place.
	os.Chown(path, 0, 0)
	if _, created, err := EnsureKey(path, testBits, uid, gid); err != nil || created {
		t.Fatalf("EnsureKey = %v, %v", created, err)
	}
	if _, gotU, _ := statOf(t, path); gotU != uid {
		t.Errorf("owner not repaired: uid %d", gotU)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "web.env")

	changed, err := WriteFileAtomic(path, []byte("A=1\n"), 0o640, -1, -1)
	if err != nil || !changed {
		t.Fatalf("first write = %v, %v; want changed", changed, err)
	}
	// The mode is exact whatever the umask (tests run with 022 or 002).
	if mode, _, _ := statOf(t, path); mode != 0o640 {
		t.Errorf("mode = %o; want 640", mode)
	}
	st1, _ := os.Stat(path)

	changed, err = WriteFileAtomic(path, []byte("A=1\n"), 0o640, -1, -1)
	if err != nil || changed {
		t.Fatalf("identical write = %v, %v; want unchanged", changed, err)
	}
	st2, _ := os.Stat(path)
	if !os.SameFile(st1, st2) {
		t.Error("identical write replaced the file")
	}

	for _, tc := range []struct {
		data string
		perm os.FileMode
	}{
		{"A=2\n", 0o640}, // content
		{"A=2\n", 0o600}, // mode only
		{"", 0o600},      // empty content is allowed
	} {
		changed, err := WriteFileAtomic(path, []byte(tc.data), tc.perm, -1, -1)
		if err != nil || !changed {
			t.Errorf("write %q %o = %v, %v; want changed", tc.data, tc.perm, changed, err)
		}
		if b, _ := os.ReadFile(path); string(b) != tc.data {
			t.Errorf("content = %q; want %q", b, tc.data)
		}
		if mode, _, _ := statOf(t, path); mode != tc.perm {
			t.Errorf("mode = %o; want %o", mode, tc.perm)
		}
	}

	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// A directory in the way is an error naming the path, and no temp file
	// is left.
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if _, err := WriteFileAtomic(sub, []byte("x"), 0o644, -1, -1); err == nil || !strings.Contains(err.Error(), sub) {
		t.Errorf("writing over a directory = %v; want an error naming %s", err, sub)
	}
	if _, err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644, -1, -1); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	entries, _ = os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %v; want web.env and sub", entries)
	}
}

func TestWriteFileAtomicOwner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	path := filepath.Join(t.TempDir(), "f")
	if _, err := WriteFileAtomic(path, []byte("x"), 0o600, uid, gid); err != nil {
		t.Fatal(err)
	}
	if _, gotU, gotG := statOf(t, path); gotU != uid || gotG != gid {
		t.Fatalf("owner %d:%d; want %d:%d", gotU, gotG, uid, gid)
	}
	// -1 keeps the existing owner across a rewrite.
	if changed, err := WriteFileAtomic(path, []byte("y"), 0o600, -1, -1); err != nil || !changed {
		t.Fatal(changed, err)
	}
	if _, gotU, gotG := statOf(t, path); gotU != uid || gotG != gid {
		t.Errorf("owner after a -1 rewrite %d:%d; want %d:%d", gotU, gotG, uid, gid)
	}
	// An owner change alone is a change.
	if changed, err := WriteFileAtomic(path, []byte("y"), 0o600, 0, 0); err != nil || !changed {
		t.Errorf("owner change = %v, %v; want changed", changed, err)
	}
	if _, gotU, _ := statOf(t, path); gotU != 0 {
		t.Errorf("owner %d; want 0", gotU)
	}
}
