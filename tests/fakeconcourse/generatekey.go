package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"golang.org/x/crypto/ssh"
)

// runGenerateKey reproduces `concourse generate-key` byte for byte (§4): PKCS#1 DER under the
// mislabelled PEM type "PRIVATE KEY", files made with os.Create (0666 & umask, truncating), and a
// comment-less "ssh-rsa …\n" public key for -t ssh.
func runGenerateKey(c cmdEnv, args []string) error {
	o, err := parseOptions(generateKeyOptions(), args, c.env, c.flavour)
	if err != nil {
		return err
	}
	path := o.str("filename")
	// Go's crypto/rsa refuses keys under 1024 bits with the text §4 quotes.
	key, err := rsa.GenerateKey(rand.Reader, int(o.integer("bits")))
	if err != nil {
		return fmt.Errorf("failed to generate key: %s", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("failed to create key file: %s", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}); err != nil {
		f.Close()
		return fmt.Errorf("failed to write key: %s", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write key: %s", err)
	}
	fmt.Fprintf(c.stdout, "wrote private key to %s\n", path)

	if o.str("type") != "ssh" {
		return nil
	}
	pub, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("failed to create ssh public key: %s", err)
	}
	pubPath := path + ".pub"
	pf, err := os.Create(pubPath)
	if err != nil {
		return fmt.Errorf("failed to create public key file: %s", err)
	}
	if _, err := pf.Write(ssh.MarshalAuthorizedKey(pub)); err != nil {
		pf.Close()
		return fmt.Errorf("failed to write public key: %s", err)
	}
	if err := pf.Close(); err != nil {
		return fmt.Errorf("failed to write public key: %s", err)
	}
	fmt.Fprintf(c.stdout, "wrote ssh public key to %s\n", pubPath)
	return nil
}
