package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/google/rpmpack"
)

// RPM facts of the Avamar client package.
const (
	// RPMName is the package name.
	RPMName = "AvamarClient"
	// RPMPrefix is the relocatable prefix.
	RPMPrefix = "/usr/local/avamar"
	// InitScript is the init script; it lies outside the prefix and is not
	// relocated.
	InitScript = "/etc/init.d/avagent"
	// DefaultRPMVersion and DefaultRPMRelease name the client of the
	// whitepaper, AvamarClient-linux-sles11-x86_64-7.5.101-101.rpm.
	DefaultRPMVersion = "7.5.101"
	// DefaultRPMRelease is the release part of the default version.
	DefaultRPMRelease = "101"
	// initScriptMarker tells the fake init script from a real one, so %post
	// never edits a file it did not ship.
	initScriptMarker = "avkit fake AvamarClient init script"
)

// Header tag and value rpmpack does not export.
const (
	tagFileDigestAlgo = 5011 // RPMTAG_FILEDIGESTALGO
	sigPayloadSize    = 1007 // RPMSIGTAG_PAYLOADSIZE: size of the uncompressed cpio archive
	pgpHashAlgoSHA256 = 8    // PGPHASHALGO_SHA256
)

// rpmModTime is the modification time of every file in the package, so
// that the same options always give the same bytes (and the same SHA-256,
// which the product's install receipt is keyed on).
var rpmModTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// RPMFile is an extra file for the fake client package.
type RPMFile struct {
	// Path is where the file is installed: relative paths are inside the
	// prefix (bin/extra), absolute ones are taken as they are.
	Path string
	// Mode is the permission bits (default 0644; 0755 for an executable).
	// Set the directory or symlink type bits to make those.
	Mode os.FileMode
	// Body is the content, or the target of a symlink.
	Body []byte
	// Config marks the file %config(noreplace).
	Config bool
}

// RPMOptions describe a fake AvamarClient RPM.
type RPMOptions struct {
	// Version is the package version (default DefaultRPMVersion).
	Version string
	// Release is the package release (default DefaultRPMRelease).
	Release string
	// Compression is the payload compression: gzip (default), xz, zstd,
	// lzma, or none. A level may follow a colon (zstd:3), as rpmpack takes
	// it. rpmpack cannot write a raw payload, so none is gzip at level 0
	// (stored blocks): the payload bytes appear as they are.
	Compression string
	// AgentBinary is the path of an avkit binary, shipped as
	// bin/avagent.bin (avkit acts as the agent under that name). Required.
	AgentBinary string
	// ExtraFiles are added to the payload, for tests that need bigger or
	// special content.
	ExtraFiles []RPMFile
	// StateDir, when set (many real installs use /var/avamar), is where
	// the client keeps its state and logs instead of the prefix's var/:
	// the package ships that directory (not relocated) and its control
	// script passes it as --vardir. Under a root that is not "/" (tests,
	// the demo) the control script finds it under the root it derives from
	// its own path, which holds while the prefix is the default one.
	StateDir string
	// StateLink makes the prefix's var/ a relative symbolic link to
	// StateDir (right for the default prefix) instead of a directory.
	StateLink bool
}

// RPMFileName is the file name of the client package of version-release,
// following the real convention.
func RPMFileName(version, release string) string {
	if version == "" {
		version = DefaultRPMVersion
	}
	if release == "" {
		release = DefaultRPMRelease
	}
	return fmt.Sprintf("%s-linux-sles11-x86_64-%s-%s.rpm", RPMName, version, release)
}

// BuildRPM writes a fake AvamarClient RPM with the real layout to w:
//
//	/usr/local/avamar/bin/avagent.bin        the agent (a copy of avkit)
//	/usr/local/avamar/bin/avtar.bin          a stub backup tool
//	/usr/local/avamar/etc/avagent.d          control script: register, start, stop, status, unregister
//	/usr/local/avamar/etc/avagent.cfg.default %config(noreplace) defaults
//	/usr/local/avamar/var/                   state and logs, empty
//	/etc/init.d/avagent                      runs the control script (not relocated)
//
// with PREFIXES=/usr/local/avamar and %pre and %post scriptlets that use
// RPM_INSTALL_PREFIX.
func BuildRPM(w io.Writer, opts RPMOptions) error {
	if opts.Version == "" {
		opts.Version = DefaultRPMVersion
	}
	if opts.Release == "" {
		opts.Release = DefaultRPMRelease
	}
	if opts.AgentBinary == "" {
		return errors.New("build rpm: no agent binary")
	}
	if opts.Compression == "none" {
		opts.Compression = "gzip:0"
	}
	agent, err := os.ReadFile(opts.AgentBinary)
	if err != nil {
		return fmt.Errorf("build rpm: %w", err)
	}

	r, err := rpmpack.NewRPM(rpmpack.RPMMetaData{
		Name:        RPMName,
		Summary:     "Avamar client (avsidecar test kit stand-in)",
		Description: "A fake Avamar client with the real layout, for testing avsidecar. Not the Dell product.",
		Version:     opts.Version,
		Release:     opts.Release,
		Arch:        "x86_64",
		OS:          "linux",
		Vendor:      "avsidecar test kit",
		Licence:     "Apache-2.0",
		Group:       "System/Backup",
		BuildHost:   "avkit",
		Compressor:  opts.Compression,
		Prefixes:    []string{RPMPrefix},
	})
	if err != nil {
		return fmt.Errorf("build rpm: %w", err)
	}

	if opts.StateDir != "" && (!path.IsAbs(opts.StateDir) || path.Clean(opts.StateDir) == "/") {
		return fmt.Errorf("build rpm: state dir %q is not an absolute directory", opts.StateDir)
	}
	if opts.StateLink && opts.StateDir == "" {
		return errors.New("build rpm: a var/ link needs a state dir")
	}
	varDir := RPMFile{Path: "var", Mode: os.ModeDir | 0o755}
	if opts.StateLink {
		// From <prefix>/var, up to the root, down to the state dir.
		up := strings.Repeat("../", strings.Count(strings.Trim(RPMPrefix, "/"), "/")+1)
		varDir = RPMFile{Path: "var", Mode: os.ModeSymlink | 0o777, Body: []byte(up + strings.TrimPrefix(path.Clean(opts.StateDir), "/"))}
	}
	files := []RPMFile{
		{Path: ".", Mode: os.ModeDir | 0o755},
		{Path: "bin", Mode: os.ModeDir | 0o755},
		{Path: "etc", Mode: os.ModeDir | 0o755},
		varDir,
		{Path: "bin/avagent.bin", Mode: 0o755, Body: agent},
		{Path: "bin/avtar.bin", Mode: 0o755, Body: []byte(avtarScript)},
		{Path: "etc/avagent.d", Mode: 0o755, Body: render(controlScriptTmpl, opts)},
		{Path: "etc/avagent.cfg.default", Mode: 0o644, Body: []byte(defaultConfig), Config: true},
		{Path: InitScript, Mode: 0o755, Body: render(initScriptTmpl, nil)},
	}
	if opts.StateDir != "" {
		files = append(files, RPMFile{Path: path.Clean(opts.StateDir), Mode: os.ModeDir | 0o755})
	}
	files = append(files, opts.ExtraFiles...)
	final := map[string]rpmpack.RPMFile{} // what rpmpack keeps: the last file of each name
	for _, f := range files {
		rf := rpmFile(f)
		final[rf.Name] = rf
		r.AddFile(rf)
	}
	// rpmpack declares the payload size as the sum of the file sizes; rpm
	// declares the size of the cpio archive, headers included, and a
	// careful installer checks it. Declare the true one.
	size, err := cpioSize(final)
	if err != nil {
		return fmt.Errorf("build rpm: %w", err)
	}
	if size > math.MaxInt32 {
		return fmt.Errorf("build rpm: payload of %d bytes is too large", size)
	}
	r.AddCustomSig(sigPayloadSize, rpmpack.EntryInt32([]int32{int32(size)}))
	// rpmpack writes FILEDIGESTALGO once per file; rpmbuild, which made the
	// real client, writes it once. rpm reads the first value either way.
	r.AddCustomTag(tagFileDigestAlgo, rpmpack.EntryInt32([]int32{pgpHashAlgoSHA256}))
	r.AddPrein(preScript)
	r.AddPostin(string(render(postScriptTmpl, nil)))

	if err := r.Write(w); err != nil {
		return fmt.Errorf("build rpm: %w", err)
	}
	return nil
}

// BuildRPMFile writes the package into dir under its conventional name
// and returns its path.
func BuildRPMFile(dir string, opts RPMOptions) (string, error) {
	p := filepath.Join(dir, RPMFileName(opts.Version, opts.Release))
	var buf bytes.Buffer
	if err := BuildRPM(&buf, opts); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write rpm: %w", err)
	}
	return p, nil
}

// rpmFile turns an RPMFile into rpmpack's form, resolving the prefix.
func rpmFile(f RPMFile) rpmpack.RPMFile {
	name := f.Path
	if !path.IsAbs(name) {
		name = path.Join(RPMPrefix, name)
	}
	mode := uint(f.Mode.Perm())
	switch {
	case f.Mode&os.ModeDir != 0:
		mode |= 0o40000
	case f.Mode&os.ModeSymlink != 0:
		mode |= 0o120000
	case f.Mode.Perm() == 0:
		mode = 0o644
	}
	var typ rpmpack.FileType
	if f.Config {
		typ = rpmpack.ConfigFile | rpmpack.NoReplaceFile
	}
	return rpmpack.RPMFile{
		Name:  name,
		Body:  f.Body,
		Mode:  mode,
		Owner: "root",
		Group: "root",
		MTime: uint32(rpmModTime.Unix()),
		Type:  typ,
	}
}

// cpioSize is the length of the cpio archive rpmpack writes for files:
// the same library, fed the same entries in the same order, counted.
func cpioSize(files map[string]rpmpack.RPMFile) (int64, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var n countingWriter
	w := cpio.NewWriter(&n)
	for _, name := range names {
		f := files[name]
		if f.Name == "/" || f.Type == rpmpack.GhostFile {
			continue
		}
		if err := w.WriteHeader(&cpio.Header{Name: f.Name, Mode: cpio.FileMode(f.Mode), Size: int64(len(f.Body))}); err != nil {
			return 0, fmt.Errorf("measure payload: %w", err)
		}
		if _, err := w.Write(f.Body); err != nil {
			return 0, fmt.Errorf("measure payload: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("measure payload: %w", err)
	}
	return int64(n), nil
}

// countingWriter counts what is written to it.
type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

func render(t *template.Template, data any) []byte {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		panic(err) // the templates are constants: a failure is a bug here
	}
	return b.Bytes()
}

var tmplFuncs = template.FuncMap{"prefix": func() string { return RPMPrefix }, "marker": func() string { return initScriptMarker }}

// avtarScript stands in for the backup tool; the product never runs it,
// but the layout has it.
const avtarScript = `#!/bin/sh
# avtar.bin: stand-in for the Avamar backup tool (avsidecar test kit).
echo "avtar (avsidecar test kit stand-in): nothing to back up"
exit 0
`

const defaultConfig = `# Avamar client defaults (avsidecar test kit stand-in).
# Flags here are examples; the agent reads var/avagent.cmd and var/.avagent.
--listenport=28002
`

// controlScriptTmpl is etc/avagent.d, the control script behind
// /etc/init.d/avagent. It finds the prefix from its own location, so it
// works wherever the package was relocated to; with RPMOptions.StateDir
// its state is there, under the root the default prefix implies.
var controlScriptTmpl = template.Must(template.New("control").Funcs(tmplFuncs).Parse(`#!/bin/sh
# avagent.d: control script of the Avamar client agent (avsidecar test kit
# stand-in). Verbs: register MCS[:PORT] [DOMAIN], start, stop, status,
# unregister.
prefix=$(cd "$(dirname "$0")/.." && pwd -P) || exit 1
bin=$prefix/bin
var=$prefix/var
{{- if .StateDir}}
# The client keeps its state in {{.StateDir}}: under the root this prefix
# lies in (a test root), else as it is.
case $prefix in
*{{prefix}}) var=${prefix%{{prefix}}}{{.StateDir}} ;;
*) var={{.StateDir}} ;;
esac
{{- end}}
etc=$prefix/etc
agent=$bin/avagent.bin
lockfile=$var/avagent.lck

# The running agent's pid is the first field of its lock file.
running() {
	[ -f "$lockfile" ] || return 1
	read -r pid rest < "$lockfile" 2>/dev/null
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start() {
	if running; then
		echo "Client Agent already running (pid $pid)"
		return 0
	fi
	"$agent" --daemon=true --vardir="$var" --bindir="$bin/" --sysdir="$etc/" --logfile="$var/avagent.log"
}

stop() {
	if ! running; then
		echo "Client Agent not running"
		rm -f "$lockfile"
		return 0
	fi
	kill "$pid"
	i=0
	while kill -0 "$pid" 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -ge 100 ]; then
			kill -9 "$pid" 2>/dev/null
			break
		fi
		sleep 0.1
	done
	rm -f "$lockfile"
	echo "Client Agent stopped"
}

case "$1" in
register)
	mcs=$2
	domain=${3:-/clients}
	if [ -z "$mcs" ]; then
		echo "usage: $0 register MCS[:PORT] [DOMAIN]" >&2
		exit 2
	fi
	port=
	case $mcs in
	*:*) port=--mcsport=${mcs##*:}; mcs=${mcs%:*} ;;
	esac
	"$agent" --init --daemon=false --mcsaddr="$mcs" $port --dpndomain="$domain" \
		--vardir="$var" --bindir="$bin/" --sysdir="$etc/" --logfile="$var/avagent.log"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "Client registration failed" >&2
		exit "$rc"
	fi
	start
	;;
start)
	start
	;;
stop)
	stop
	;;
status)
	if running; then
		echo "Client Agent running (pid $pid)"
		exit 0
	fi
	echo "Client Agent not running"
	exit 3
	;;
unregister)
	stop
	rm -f "$var/avagent.cfg" "$var/cid.bin"
	echo "Client unregistered"
	;;
*)
	echo "usage: $0 register MCS[:PORT] [DOMAIN] | start | stop | status | unregister" >&2
	exit 2
	;;
esac
`))

// initScriptTmpl is /etc/init.d/avagent. %post writes the real prefix into
// AVAMAR_PREFIX. When it lies under another root (the product's
// AVSIDECAR_ROOT, where no chroot happens), the prefix is looked for under
// that root first.
var initScriptTmpl = template.Must(template.New("init").Funcs(tmplFuncs).Parse(`#!/bin/sh
# {{marker}}: runs the control script of the Avamar client.
AVAMAR_PREFIX={{prefix}}
root=$(cd "$(dirname "$0")/../.." && pwd -P)
if [ -x "$root$AVAMAR_PREFIX/etc/avagent.d" ]; then
	exec "$root$AVAMAR_PREFIX/etc/avagent.d" "$@"
fi
exec "$AVAMAR_PREFIX/etc/avagent.d" "$@"
`))

const preScript = `# %pre of the avsidecar test kit AvamarClient
echo "AvamarClient: preparing install into ${RPM_INSTALL_PREFIX:-/usr/local/avamar}"
exit 0
`

// postScriptTmpl is %post: it records the prefix in the init script (only
// the fake one: the marker guards a host's real file) and logs the install
// into var/, which is where the product expects client state.
var postScriptTmpl = template.Must(template.New("post").Funcs(tmplFuncs).Parse(`# %post of the avsidecar test kit AvamarClient
P=${RPM_INSTALL_PREFIX:-{{prefix}}}
if [ -f /etc/init.d/avagent ] && grep -q '{{marker}}' /etc/init.d/avagent; then
	sed -i "s|^AVAMAR_PREFIX=.*|AVAMAR_PREFIX=$P|" /etc/init.d/avagent
fi
mkdir -p "$P/var" && echo "post-install prefix=$P" >> "$P/var/install.log"
echo "AvamarClient: installed into $P"
exit 0
`))
