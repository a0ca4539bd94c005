package backupapi

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretVolume writes files as the kubelet projects a Secret volume: each
// key is a link to ..data/KEY, and ..data a link to a directory of this
// version, swapped by a rename when the Secret changes; keys the new
// version lacks lose their link.
type secretVolume struct {
	dir     string
	version int
}

func newSecretVolume(t *testing.T) *secretVolume {
	t.Helper()
	return &secretVolume{dir: t.TempDir()}
}

func (v *secretVolume) write(t *testing.T, files map[string]string) {
	t.Helper()
	v.version++
	ts := fmt.Sprintf("..2026_11_29_10_00_%02d.%d", v.version, 1000+v.version)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, content := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, k), []byte(content), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(v.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, keep := files[e.Name()]; !strings.HasPrefix(e.Name(), "..") && !keep {
			os.Remove(filepath.Join(v.dir, e.Name()))
		}
	}
	for k := range files {
		link := filepath.Join(v.dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
			t.Fatal(err)
		}
	}
}

// kubectlSecret is what `kubectl create secret generic avamar-rest
// --from-literal=client_id=... ...` stores: the values as they are.
func kubectlSecret(pw string) map[string]string {
	return map[string]string{"client_id": clientID, "client_secret": clientSecret, "username": username, "password": pw}
}

// TestCredentialsDirectory runs the check with the credentials of a
// Secret mounted as a directory, its CA as the optional key ca.crt: the
// files are read again at every token request and the CA at every check,
// so the kubelet's update of the Secret is picked up without a restart.
func TestCredentialsDirectory(t *testing.T) {
	f := newFixture(t, 0)
	when := time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)
	f.srv.AddBackup(f.id, when)
	vol := newSecretVolume(t)
	files := kubectlSecret(password)
	files[CAFileName] = string(f.srv.CAPEM())
	vol.write(t, files)
	cfg := f.config()
	cfg.CredentialsFile, cfg.CAFile = vol.dir, ""
	c := f.checker(t, cfg)
	st := check(t, c)
	wantState(t, st, StateOK, "")
	if !st.LastBackup.Equal(when) {
		t.Errorf("last backup %s, want %s", st.LastBackup, when)
	}

	// A new password in the Secret: read at the next token request.
	files["password"] = "wrong-" + password
	vol.write(t, files)
	f.srv.ExpireTokens()
	wantState(t, check(t, c), StateUnauthorized, "invalid_grant")
	files["password"] = password
	vol.write(t, files)
	wantState(t, check(t, c), StateOK, "")

	// Without ca.crt the system roots are trusted, which do not know the
	// stand-in's CA; the key added again is trusted at the next check.
	delete(files, CAFileName)
	vol.write(t, files)
	wantState(t, check(t, c), StateError, "server certificate not trusted")
	files[CAFileName] = string(f.srv.CAPEM())
	vol.write(t, files)
	wantState(t, check(t, c), StateOK, "")

	// A ca.crt that is no certificate is an error that names the file.
	files[CAFileName] = "-----BEGIN NOTHING-----\n"
	vol.write(t, files)
	wantState(t, check(t, c), StateError, "rest ca file "+filepath.Join(vol.dir, CAFileName)+": no PEM certificate")

	// AVAMAR_REST_CA_FILE, when set, wins over the directory's ca.crt.
	cfg.CAFile = f.ca
	wantState(t, check(t, f.checker(t, cfg)), StateOK, "")

	b, _ := json.Marshal(c.Status())
	for _, s := range []string{clientSecret, password} {
		if strings.Contains(f.log.String()+string(b), s) {
			t.Errorf("secret %.4s... in the log or status", s)
		}
	}
}

func TestReadCredentialsDir(t *testing.T) {
	const secret = "v3ry-s3cret"
	for name, tc := range map[string]struct {
		files   map[string]string
		want    credentials
		errPart string
	}{
		"kubectl --from-literal": {files: map[string]string{"client_id": "a", "client_secret": secret, "username": "u", "password": "p=q "},
			want: credentials{"a", secret, "u", "p=q "}},
		"files made by echo, CRLF, ca.crt and others beside": {files: map[string]string{"client_id": "a\n", "client_secret": secret + "\r\n", "username": "u\n", "password": " p\n", "ca.crt": "x", "note": "y"},
			want: credentials{"a", secret, "u", " p"}},
		"missing": {files: map[string]string{"client_id": "a", "client_secret": secret},
			errPart: "missing or empty file username, password"},
		"empty file": {files: map[string]string{"client_id": "", "client_secret": secret, "username": "u", "password": "p"},
			errPart: "missing or empty file client_id"},
		"only a newline": {files: map[string]string{"client_id": "\n", "client_secret": secret, "username": "u", "password": "p"},
			errPart: "missing or empty file client_id"},
		"keys misspelt": {files: map[string]string{"client-id": "a", "client_secret": secret, "user": "u", "password": "p"},
			errPart: "missing or empty file client_id, username (the directory holds client-id, user; the files are client_id, client_secret, username, password)"},
		"several lines": {files: map[string]string{"client_id": "a", "client_secret": secret + "\n" + secret + "\n", "username": "u", "password": "p"},
			errPart: "client_secret: more than one line"},
		"a KEY=VALUE file in the directory": {files: map[string]string{"credentials": "client_id=a\nclient_secret=" + secret + "\n"},
			errPart: "missing or empty file client_id, client_secret, username, password (the directory holds credentials;"},
		"empty directory": {files: map[string]string{},
			errPart: "missing or empty file client_id, client_secret, username, password"},
	} {
		t.Run(name, func(t *testing.T) {
			vol := newSecretVolume(t)
			vol.write(t, tc.files)
			got, err := readCredentials(vol.dir)
			wantCredentials(t, got, err, tc.want, tc.errPart, secret)
		})
	}
}

// TestReadCredentialsTooLarge: a file of a credential larger than any
// credential is refused without being read whole.
func TestReadCredentialsTooLarge(t *testing.T) {
	vol := newSecretVolume(t)
	files := kubectlSecret(password)
	files["password"] = strings.Repeat("x", maxCredentialSize+1)
	vol.write(t, files)
	if _, err := readCredentials(vol.dir); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want larger than", err)
	}
}
