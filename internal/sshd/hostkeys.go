package sshd

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	gossh "golang.org/x/crypto/ssh"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
)

// hostKeyFiles are the host keys, named as OpenSSH names them so an
// operator recognises them; ed25519 first, RSA for old clients.
var hostKeyFiles = []struct {
	name, algo string
	gen        func() (crypto.Signer, error)
}{
	{"ssh_host_ed25519_key", gossh.KeyAlgoED25519, func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
	{"ssh_host_rsa_key", gossh.KeyAlgoRSA, func() (crypto.Signer, error) {
		return rsa.GenerateKey(rand.Reader, 3072)
	}},
}

// maxHostKeySize bounds what is read of a host key file: an OpenSSH
// private key, even 16384-bit RSA, is under 16 KiB. A larger file is not
// a key and is not read whole into PID 1's memory.
const maxHostKeySize = 64 << 10

// damagedSuffix names a host key file that was set aside, followed by the
// UTC time: ssh_host_rsa_key.damaged-20261129T023634Z.
const damagedSuffix = ".damaged-"

// hostKeys is what loadHostKeys found, made and set aside.
type hostKeys struct {
	signers []gossh.Signer
	// setAside are the damaged files renamed out of the way.
	setAside []string
}

// errDamaged marks a host key file that exists and was read but holds no
// usable key of its type.
var errDamaged = errors.New("damaged host key")

// loadHostKeys reads the host keys from dir, making any that is missing.
// Keys are made once and kept, so a rescheduled pod keeps its identity. A
// file that holds no usable key is set aside (see the package doc) and a
// new key made; a file that cannot be read at all is an error.
func loadHostKeys(dir string, log zerolog.Logger) (hostKeys, error) {
	var hk hostKeys
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return hk, fmt.Errorf("create ssh host key dir: %w", err)
	}
	for _, f := range hostKeyFiles {
		path := filepath.Join(dir, f.name)
		s, err := readHostKey(path, f.algo, log)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if s, err = makeHostKey(path, f.gen); err != nil {
				return hk, err
			}
			log.Info().Str("path", path).Str("fingerprint", gossh.FingerprintSHA256(s.PublicKey())).Msg("host key created")
		case errors.Is(err, errDamaged):
			damage := err
			aside, err := setAside(path, time.Now())
			if err != nil {
				return hk, fmt.Errorf("%w; %w", damage, err)
			}
			if s, err = makeHostKey(path, f.gen); err != nil {
				return hk, err
			}
			hk.setAside = append(hk.setAside, aside)
			log.Error().Err(damage).Str("path", path).Str("set_aside", aside).
				Str("fingerprint", gossh.FingerprintSHA256(s.PublicKey())).
				Msg("host key damaged; set aside and replaced by a new key")
		case err != nil:
			return hk, err
		}
		hk.signers = append(hk.signers, s)
	}
	return hk, nil
}

// readHostKey loads one key and tightens its mode to 0600 if it was
// readable by others: a host key anyone can read is a host key anyone can
// impersonate. Its errors name the path; fs.ErrNotExist and errDamaged
// can be told apart with errors.Is.
func readHostKey(path, algo string, log zerolog.Logger) (gossh.Signer, error) {
	data, err := readRegular(path, maxHostKeySize)
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("ssh host key: %w: %w", errDamaged, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	s, err := gossh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("ssh host key %s: %w: %w", path, errDamaged, err)
	}
	if got := s.PublicKey().Type(); got != algo {
		return nil, fmt.Errorf("ssh host key %s: %w: holds a %s key, want %s", path, errDamaged, got, algo)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	if fi.Mode().Perm() != 0o600 {
		// A key on a read-only mount stays as it is: refusing it would
		// not make it less readable, only turn SSH off.
		if err := os.Chmod(path, 0o600); err != nil {
			log.Warn().Str("path", path).Str("mode", fi.Mode().Perm().String()).Err(err).Msg("host key readable by others; cannot tighten its mode")
		} else {
			log.Warn().Str("path", path).Str("mode", fi.Mode().Perm().String()).Msg("host key mode tightened to 0600")
		}
	}
	return s, nil
}

var (
	// errTooLarge is a file larger than its reader accepts.
	errTooLarge = errors.New("file too large")
	// errNotRegular is a directory, a FIFO, a device or a socket where a
	// file is expected.
	errNotRegular = errors.New("not a regular file")
)

// readRegular reads a regular file of at most max bytes. Anything else in
// its place (a directory, a FIFO that would block, a device) is an error,
// and so is a larger file: a side feature never blocks or fills PID 1.
// Errors are *fs.PathError, so they name the file.
func readRegular(path string, max int64) ([]byte, error) {
	f, _, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAtMost(f, path, max)
}

// openRegular opens a regular file for reading and returns its fstat;
// anything else in its place is an error that names it.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: %s", errNotRegular, kindOf(fi.Mode()))}
	}
	return f, fi, nil
}

// readAtMost reads r to its end, failing with errTooLarge past max bytes.
func readAtMost(r io.Reader, path string, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, tooLarge(path, max)
	}
	return data, nil
}

// tooLarge is the error of a file over max bytes.
func tooLarge(path string, max int64) error {
	return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w: more than %d bytes", errTooLarge, max)}
}

// kindOf names what a file that is not regular is.
func kindOf(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "not a file"
	}
}

// setAside renames a damaged host key to PATH.damaged-TIME (UTC), with a
// counter if that name is taken, and makes it 0600: it stays for a human
// to look at, never readable by others.
func setAside(path string, now time.Time) (string, error) {
	base := path + damagedSuffix + now.UTC().Format("20060102T150405Z")
	dst := base
	for i := 2; ; i++ {
		_, err := os.Lstat(dst)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("set aside %s: %w", path, err)
		}
		dst = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("set aside %s: %w", path, err)
	}
	if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600 {
		if err := os.Chmod(dst, 0o600); err != nil {
			return "", fmt.Errorf("set aside %s: %w", path, err)
		}
	}
	return dst, nil
}

// makeHostKey writes a new key with mode 0600 under a temporary name and
// renames it into place, then syncs the directory, so a crash never
// leaves a truncated key behind and the key made is the key kept.
func makeHostKey(path string, gen func() (crypto.Signer, error)) (gossh.Signer, error) {
	key, err := gen()
	if err != nil {
		return nil, fmt.Errorf("generate ssh host key %s: %w", path, err)
	}
	block, err := gossh.MarshalPrivateKey(key, "")
	if err != nil {
		return nil, fmt.Errorf("marshal ssh host key %s: %w", path, err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, fmt.Errorf("ssh host key: %w", err)
	}
	s, err := gossh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("ssh host key signer %s: %w", path, err)
	}
	return s, nil
}
