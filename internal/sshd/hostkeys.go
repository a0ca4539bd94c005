package sshd

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"
)

// hostKeyFiles are the host keys, named as OpenSSH names them so an
// operator recognises them; ed25519 first, RSA for old clients.
var hostKeyFiles = []struct {
	name string
	gen  func() (crypto.Signer, error)
}{
	{"ssh_host_ed25519_key", func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
	{"ssh_host_rsa_key", func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, 3072)
	}},
}

// loadHostKeys reads the host keys from dir, making any that is missing.
// Keys are made once and kept, so a rescheduled pod keeps its identity.
func loadHostKeys(dir string, log zerolog.Logger) ([]gossh.Signer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create host key dir: %w", err)
	}
	var signers []gossh.Signer
	for _, hk := range hostKeyFiles {
		path := filepath.Join(dir, hk.name)
		s, err := readHostKey(path, log)
		if errors.Is(err, fs.ErrNotExist) {
			s, err = makeHostKey(path, hk.gen)
			if err == nil {
				log.Info().Str("path", path).Str("fingerprint", gossh.FingerprintSHA256(s.PublicKey())).Msg("host key created")
			}
		}
		if err != nil {
			return nil, err
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// readHostKey loads one key and tightens its mode to 0600 if it was
// readable by others: a host key anyone can read is a host key anyone can
// impersonate.
func readHostKey(path string, log zerolog.Logger) (gossh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("parse host key %s: %w", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("stat host key: %w", err)
	}
	if fi.Mode().Perm() != 0o600 {
		log.Warn().Str("path", path).Str("mode", fi.Mode().Perm().String()).Msg("host key mode tightened to 0600")
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("chmod host key: %w", err)
		}
	}
	return s, nil
}

// makeHostKey writes a new key with mode 0600 under a temporary name and
// renames it into place, so a crash never leaves a truncated key behind.
func makeHostKey(path string, gen func() (crypto.Signer, error)) (gossh.Signer, error) {
	key, err := gen()
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	block, err := gossh.MarshalPrivateKey(key, "")
	if err != nil {
		return nil, fmt.Errorf("marshal host key: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, fmt.Errorf("create host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("chmod host key: %w", err)
	}
	if _, err := tmp.Write(pem.EncodeToMemory(block)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write host key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("sync host key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("close host key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("install host key: %w", err)
	}
	s, err := gossh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("host key signer: %w", err)
	}
	return s, nil
}
