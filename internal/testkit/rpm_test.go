package testkit_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/avsidecar/avsidecar/internal/avclient"
	"github.com/avsidecar/avsidecar/internal/testkit"
)

// stubAgent is a small stand-in for the avkit binary, for tests about the
// package rather than the agent: compressing the real 13 MB binary again
// and again made them slow on a loaded machine.
func stubAgent(t *testing.T) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "avagent.bin", "#!/bin/sh\necho stub agent\n")
}

// rpmQuery runs rpm -qp with a query format.
func rpmQuery(t *testing.T, pkg, format string) string {
	t.Helper()
	out, err := exec.Command(testkit.NeedCommand(t, "rpm"), "-qp", "--queryformat", format, pkg).Output()
	if err != nil {
		t.Fatalf("rpm -qp %s: %v", format, err)
	}
	return string(out)
}

func TestRPMHeader(t *testing.T) {
	testkit.NeedCommand(t, "rpm")
	pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{Version: "19.4.100", Release: "124", AgentBinary: stubAgent(t)})

	if got, want := filepath.Base(pkg), "AvamarClient-linux-sles11-x86_64-19.4.100-124.rpm"; got != want {
		t.Errorf("file name %q, want %q", got, want)
	}
	got := rpmQuery(t, pkg, "%{NAME} %{VERSION}-%{RELEASE} %{ARCH} %{PREFIXES}")
	if want := "AvamarClient 19.4.100-124 x86_64 /usr/local/avamar"; got != want {
		t.Errorf("header %q, want %q", got, want)
	}
	files := rpmQuery(t, pkg, "[%{FILENAMES} %{FILEFLAGS:fflags}\n]")
	wantFiles := `/etc/init.d/avagent 
/usr/local/avamar 
/usr/local/avamar/bin 
/usr/local/avamar/bin/avagent.bin 
/usr/local/avamar/bin/avtar.bin 
/usr/local/avamar/etc 
/usr/local/avamar/etc/avagent.cfg.default cn
/usr/local/avamar/etc/avagent.d 
/usr/local/avamar/var 
`
	if diff := cmp.Diff(wantFiles, files); diff != "" {
		t.Errorf("files and flags (-want +got):\n%s", diff)
	}
	if algo := rpmQuery(t, pkg, "[%{FILEDIGESTALGO} ]"); algo != "8 " {
		t.Errorf("FILEDIGESTALGO %q, want one SHA-256 (8) as rpmbuild writes", algo)
	}
	if out, err := exec.Command("rpm", "-K", pkg).CombinedOutput(); err != nil || !strings.Contains(string(out), "digests OK") {
		t.Errorf("rpm -K: %v\n%s", err, out)
	}
	scripts := rpmQuery(t, pkg, "%{PREINPROG} %{POSTINPROG}")
	if scripts != "/bin/sh /bin/sh" {
		t.Errorf("scriptlet interpreters %q, want /bin/sh for %%pre and %%post", scripts)
	}
}

// TestRPMDeterministic matters because the product keys its install
// receipt on the RPM's SHA-256.
func TestRPMDeterministic(t *testing.T) {
	opts := testkit.RPMOptions{AgentBinary: stubAgent(t)}
	var a, b bytes.Buffer
	if err := testkit.BuildRPM(&a, opts); err != nil {
		t.Fatal(err)
	}
	if err := testkit.BuildRPM(&b, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two builds with the same options differ")
	}
}

// TestRPMInstallRelocated installs with the real rpm into a root and a
// relocated prefix, then uses the installed control script against a fake
// MCS: the package works where it is put.
func TestRPMInstallRelocated(t *testing.T) {
	for _, comp := range []string{"gzip", "xz", "zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{
				Compression: comp,
				AgentBinary: stubAgent(t),
				ExtraFiles: []testkit.RPMFile{
					{Path: "lib/big.bin", Mode: 0o644, Body: bytes.Repeat([]byte("avamar"), 200000)},
					{Path: "lib/link", Mode: os.ModeSymlink | 0o777, Body: []byte("big.bin")},
				},
			})
			archive, err := exec.Command(testkit.NeedCommand(t, "rpm2cpio"), pkg).Output()
			if err != nil {
				t.Fatalf("rpm2cpio: %v", err)
			}
			if got, want := rpmQuery(t, pkg, "%{ARCHIVESIZE}"), itoa(len(archive)); got != want {
				t.Errorf("declared archive size %s, the archive has %s bytes", got, want)
			}
			root := t.TempDir()
			installRPM(t, pkg, root, "/opt/x")
			wantModes := map[string]os.FileMode{
				"opt/x/bin/avagent.bin":         0o755,
				"opt/x/bin/avtar.bin":           0o755,
				"opt/x/etc/avagent.d":           0o755,
				"opt/x/etc/avagent.cfg.default": 0o644,
				"etc/init.d/avagent":            0o755,
				"opt/x/lib/big.bin":             0o644,
			}
			for p, want := range wantModes {
				st, err := os.Stat(filepath.Join(root, p))
				if err != nil {
					t.Errorf("installed tree lacks %s: %v", p, err)
				} else if st.Mode() != want {
					t.Errorf("%s has mode %v, want %v", p, st.Mode(), want)
				}
			}
			if st, err := os.Stat(filepath.Join(root, "opt/x/var")); err != nil || !st.IsDir() {
				t.Errorf("no var/ directory: %v", err)
			}
			if target, err := os.Readlink(filepath.Join(root, "opt/x/lib/link")); err != nil || target != "big.bin" {
				t.Errorf("symlink: %q, %v", target, err)
			}
			if _, err := os.Stat(filepath.Join(root, "usr/local/avamar")); !os.IsNotExist(err) {
				t.Errorf("files left at the original prefix: %v", err)
			}
		})
	}
}

// installRPM installs pkg with the real rpm into root, without scriptlets,
// relocating the prefix to prefix.
func installRPM(t *testing.T, pkg, root, prefix string) {
	t.Helper()
	out, err := exec.Command(testkit.NeedCommand(t, "rpm"), "-i", "--root", root, "--nodeps", "--noscripts",
		"--dbpath", filepath.Join(root, "rpmdb"), "--relocate", "/usr/local/avamar="+prefix, pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -i: %v\n%s", err, out)
	}
}

// TestRPMScripts runs the package's %post and control script as the
// product does under AVSIDECAR_ROOT (with /bin/sh and RPM_INSTALL_PREFIX,
// no chroot) in a relocated install.
func TestRPMScripts(t *testing.T) {
	sh := testkit.NeedCommand(t, "sh")
	pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{})
	root := t.TempDir()
	installRPM(t, pkg, root, "/srv/avamar")
	prefix := filepath.Join(root, "srv/avamar")

	post := exec.Command(sh, "-c", rpmQuery(t, pkg, "%{POSTIN}"))
	post.Env = append(os.Environ(), "RPM_INSTALL_PREFIX="+prefix)
	if out, err := post.CombinedOutput(); err != nil {
		t.Fatalf("%%post: %v\n%s", err, out)
	}
	log, err := os.ReadFile(filepath.Join(prefix, "var/install.log"))
	if err != nil || string(log) != "post-install prefix="+prefix+"\n" {
		t.Errorf("%%post did not record the prefix: %q, %v", log, err)
	}

	m := startMCS(t, testkit.MCSOptions{})
	port := testkit.FreePort(t)
	writeFile(t, filepath.Join(prefix, "var"), "avagent.cmd", "--iplist=127.0.0.1\n--listenport="+itoa(port)+"\n")
	writeFile(t, filepath.Join(prefix, "var"), ".avagent", "--hostname=pod-init\n")
	control := filepath.Join(prefix, "etc/avagent.d")
	r := runCmd(t, control, "register", "127.0.0.1:"+itoa(m.Port()), "/clients/k8s")
	if r.code != 0 || !strings.Contains(r.stdout, "Client Agent started") {
		t.Fatalf("register: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	t.Cleanup(func() { runCmd(t, control, "stop") })
	if err := m.WaitReachable(ctxT(t), "pod-init"); err != nil {
		t.Fatal(err)
	}
	if regs := m.Registrations(); len(regs) != 1 || regs[0].Domain != "/clients/k8s" {
		t.Errorf("registrations %+v, want one in /clients/k8s", regs)
	}
	if r := runCmd(t, control, "status"); r.code != 0 || !strings.Contains(r.stdout, "running") {
		t.Errorf("status: exit %d, %q", r.code, r.stdout)
	}
	if r := runCmd(t, control, "stop"); r.code != 0 || !strings.Contains(r.stdout, "stopped") {
		t.Errorf("stop: exit %d, %q", r.code, r.stdout)
	}
	if r := runCmd(t, control, "status"); r.code != 3 {
		t.Errorf("status after stop: exit %d, want 3", r.code)
	}
	if err := m.WaitUnreachable(ctxT(t), "pod-init"); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, control, "unregister"); r.code != 0 {
		t.Errorf("unregister: exit %d", r.code)
	}
	if _, err := os.Stat(filepath.Join(prefix, "var/avagent.cfg")); !os.IsNotExist(err) {
		t.Errorf("avagent.cfg after unregister: %v", err)
	}
}

// TestRPMInitScriptUnderRoot checks that /etc/init.d/avagent installed
// under a root (AVSIDECAR_ROOT, no chroot) runs the control script under
// that root, not the host's.
func TestRPMInitScriptUnderRoot(t *testing.T) {
	pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{AgentBinary: stubAgent(t)})
	root := t.TempDir()
	installRPM(t, pkg, root, testkit.RPMPrefix)
	r := runCmd(t, filepath.Join(root, testkit.InitScript), "status")
	if r.code != 3 || r.stdout != "Client Agent not running\n" {
		t.Errorf("init script status: exit %d, stdout %q, stderr %q; want 3 and not running", r.code, r.stdout, r.stderr)
	}
	r = runCmd(t, filepath.Join(root, testkit.InitScript), "bogus")
	if r.code != 2 || !strings.Contains(r.stderr, root+"/usr/local/avamar/etc/avagent.d") {
		t.Errorf("init script usage: exit %d, stderr %q; want 2 naming the control script under the root", r.code, r.stderr)
	}
}

// TestRPMScriptletsInChroot installs with the real rpm and its scriptlets,
// which rpm runs chrooted into the root: %pre and %post see the relocated
// RPM_INSTALL_PREFIX, and %post points the init script at it.
func TestRPMScriptletsInChroot(t *testing.T) {
	testkit.NeedRoot(t)
	rpmBin := testkit.NeedCommand(t, "rpm")
	pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{AgentBinary: stubAgent(t)})
	root := t.TempDir()
	for _, name := range []string{"sh", "sed", "grep", "mkdir"} {
		copyWithLibs(t, testkit.NeedCommand(t, name), root)
	}
	out, err := exec.Command(rpmBin, "-i", "--root", root, "--nodeps", "--dbpath", "/rpmdb",
		"--relocate", "/usr/local/avamar=/srv/avamar", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -i: %v\n%s", err, out)
	}
	for _, want := range []string{"preparing install into /srv/avamar", "installed into /srv/avamar"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rpm output lacks %q:\n%s", want, out)
		}
	}
	init, err := os.ReadFile(filepath.Join(root, testkit.InitScript))
	if err != nil || !strings.Contains(string(init), "\nAVAMAR_PREFIX=/srv/avamar\n") {
		t.Errorf("%%post did not point the init script at the prefix (%v):\n%s", err, init)
	}
	log, err := os.ReadFile(filepath.Join(root, "srv/avamar/var/install.log"))
	if err != nil || string(log) != "post-install prefix=/srv/avamar\n" {
		t.Errorf("install.log %q, %v", log, err)
	}
	if r := runCmd(t, filepath.Join(root, testkit.InitScript), "status"); r.code != 3 {
		t.Errorf("relocated init script status: exit %d, stderr %q; want 3 (not running)", r.code, r.stderr)
	}
}

// copyWithLibs copies a dynamically linked program and the libraries ldd
// names into root, at the same paths, so it runs chrooted there.
func copyWithLibs(t *testing.T, prog, root string) {
	t.Helper()
	out, err := exec.Command(testkit.NeedCommand(t, "ldd"), prog).Output()
	if err != nil && !strings.Contains(string(out), "not a dynamic executable") {
		t.Fatalf("ldd %s: %v", prog, err)
	}
	files := []string{prog}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, f)
		if f == prog { // programs go where rpm's scriptlet PATH finds them
			dst = filepath.Join(root, "bin", filepath.Base(prog))
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRPMStateDir: the package variant that keeps the client's state in
// /var/avamar ships that directory, with the prefix's var/ as a directory
// or as a link to it; its control script registers and logs there, under
// a root too; and the product's avclient.Locate finds it both ways.
func TestRPMStateDir(t *testing.T) {
	for _, link := range []bool{false, true} {
		t.Run(map[bool]string{false: "package dir", true: "var link"}[link], func(t *testing.T) {
			pkg := testkit.WriteRPM(t, t.TempDir(), testkit.RPMOptions{StateDir: "/var/avamar", StateLink: link})
			files := rpmQuery(t, pkg, "[%{FILENAMES} %{FILEMODES:perms} %{FILELINKTOS}\n]")
			wantVar := "/usr/local/avamar/var drwxr-xr-x \n"
			if link {
				wantVar = "/usr/local/avamar/var lrwxrwxrwx ../../../var/avamar\n"
			}
			if !strings.Contains(files, "/var/avamar drwxr-xr-x \n") || !strings.Contains(files, wantVar) {
				t.Fatalf("files lack /var/avamar or %q:\n%s", wantVar, files)
			}
			root := t.TempDir()
			installRPM(t, pkg, root, testkit.RPMPrefix)
			state := filepath.Join(root, "var/avamar")
			c, layout, err := avclient.Client{Root: root, Prefix: filepath.Join(root, testkit.RPMPrefix)}.Locate("")
			wantHow := map[bool]string{false: avclient.VarStateDir, true: avclient.VarSymlink}[link]
			if err != nil || c.VarDir() != state || layout.FoundBy != wantHow {
				t.Fatalf("Locate = %+v, %v; want %s found by %s", layout, err, state, wantHow)
			}

			m := startMCS(t, testkit.MCSOptions{})
			port := testkit.FreePort(t)
			writeFile(t, state, "avagent.cmd", "--iplist=127.0.0.1\n--listenport="+itoa(port)+"\n--mcsport="+itoa(m.Port())+"\n")
			writeFile(t, state, ".avagent", "--hostname=pod-state\n")
			initScript := filepath.Join(root, testkit.InitScript)
			r := runCmd(t, initScript, "register", "127.0.0.1", "/clients")
			if r.code != 0 || !strings.Contains(r.stdout, "Client Agent started") {
				t.Fatalf("register: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
			}
			t.Cleanup(func() { runCmd(t, initScript, "stop") })
			if err := m.WaitReachable(ctxT(t), "pod-state"); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"avagent.cfg", "cid.bin", "avagent.lck", "avagent.log"} {
				if _, err := os.Stat(filepath.Join(state, f)); err != nil {
					t.Errorf("%s not in /var/avamar: %v", f, err)
				}
			}
			if !link {
				if entries, _ := os.ReadDir(filepath.Join(root, testkit.RPMPrefix, "var")); len(entries) != 0 {
					t.Errorf("the prefix's var/ got %d entries, want none", len(entries))
				}
			}
			if r := runCmd(t, initScript, "stop"); r.code != 0 || !strings.Contains(r.stdout, "stopped") {
				t.Errorf("stop: exit %d, %q", r.code, r.stdout)
			}
		})
	}
}
