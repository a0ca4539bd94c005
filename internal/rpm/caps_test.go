package rpm

import (
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/avsidecar/avsidecar/internal/testkit"
	"golang.org/x/sys/unix"
)

// capTexts are %caps texts, valid and not, in libcap's grammar.
var capTexts = []string{
	"cap_net_raw=ep", "cap_net_raw+ep", "CAP_NET_RAW=ep", "cap_net_bind_service,cap_setuid+ep",
	"cap_chown+p cap_fowner+i", "cap_net_raw,cap_chown=pi", "cap_chown=e", "=", " ", "=ep", "all=ep",
	"all=p cap_sys_admin-p", "cap_net_raw=eip cap_net_raw-e", "cap_bpf,cap_perfmon=eip", "40=ep", "41=ep",
	"0x5=p", "cap_sys_nice+ep", "cap_net_raw+p-p", "cap_net_raw=ep cap_chown=p", "  cap_kill=ep\tcap_kill-ip  ",
	"cap_setuid=+ep", "cap_setuid=-e",
	// Not capabilities:
	"cap_no_such=ep", "+ep", "cap_net_raw", "cap_net_raw=x", "cap_net_raw+", "cap_net_raw,=ep", "cap_net_raw=ep+",
	"=+ep", "cap_net_raw+e p", "64=ep", "cap_chown=ep cap_kill=p",
	// Corners of the grammar:
	"cap_chown=ep,cap_kill", "cap_chown ,cap_kill=ep", "all", "ALL=ep", "cap_chown=epe", "cap_chown=e=p",
	"cap_chown+e+p", "cap_chown-e+p", "cap_chown+e-", "alls=ep", "all_=ep", "cap_chown2=ep", "007=p", "0b1=p",
	"1e=p", "cap_=ep", "cap_chown=E", "\tcap_chown=p", "cap_chown=p\x00", "chown=ep", "=e", "=i", "=p",
	"all=e", "all-e",
}

// TestCapabilityXattr compares the security.capability value made from
// each text with the one setcap(8) (libcap, which rpm uses) writes for
// it, and refuses exactly the texts setcap refuses.
func TestCapabilityXattr(t *testing.T) {
	testkit.NeedRoot(t)
	setcap := testkit.NeedCommand(t, "setcap")
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	bits := KernelCapBits()
	for _, text := range capTexts {
		_ = unix.Removexattr(f, "security.capability")
		want, wantErr := "", exec.Command(setcap, text, f).Run()
		if wantErr == nil {
			buf := make([]byte, 64)
			n, err := unix.Getxattr(f, "security.capability", buf)
			if err != nil {
				t.Fatalf("%q: setcap wrote no xattr: %v", text, err)
			}
			want = hex.EncodeToString(buf[:n])
		}
		value, err := CapabilityXattr(text, bits)
		switch {
		case wantErr != nil && err == nil:
			t.Errorf("%q: %x, but setcap refuses it", text, value)
		case wantErr == nil && err != nil:
			t.Errorf("%q: %v, but setcap writes %s", text, err, want)
		case err == nil && hex.EncodeToString(value) != want:
			t.Errorf("%q: %x, setcap writes %s", text, value, want)
		case err != nil && !errors.Is(err, ErrUnusable):
			t.Errorf("%q: %v does not match ErrUnusable", text, err)
		}
	}
}

// FuzzCapabilityXattr: any text is parsed or refused, never more.
func FuzzCapabilityXattr(f *testing.F) {
	for _, text := range capTexts {
		f.Add(text)
	}
	f.Fuzz(func(t *testing.T, text string) {
		value, err := CapabilityXattr(text, 41)
		if err != nil {
			mustUnusable(t, err)
			return
		}
		if len(value) != 20 {
			t.Fatalf("%q: %d bytes", text, len(value))
		}
	})
}
