// Package atomicfile writes the state files that keep avsidecar from doing
// something twice: the install and registration receipts, the flag files
// avagent reads, the SSH host keys. A registration is not idempotent on a
// real Avamar server, so a receipt that a crash or a power cut loses, or
// leaves half written, means a second registration.
//
// One rule for all of them: a reader sees the old file or the new one,
// never a mix, and once Write returns the new one survives a power cut. The
// data goes to a temporary file in the same directory, which is fsynced,
// renamed over the destination, and the directory is fsynced, so the
// rename itself is on disk. Directories Write creates are fsynced into
// their parents too.
package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tempMark separates a destination's name from the random part of its
// temporary files' names: ".NAME.tmp-123456".
const tempMark = ".tmp-"

// Write replaces path with data, atomically and durably, creating its
// directory (mode 0755) when missing. The file gets mode perm, whatever
// the umask.
func Write(path string, data []byte, perm fs.FileMode) error {
	if err := write(path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteIfChanged is Write, except that a file already holding data (and
// mode perm) is left alone. It reports whether it wrote.
func WriteIfChanged(path string, data []byte, perm fs.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == perm {
			return false, nil
		}
	}
	return true, Write(path, data, perm)
}

// step names each point of a write; the tests stop a process at each.
var step = func(string) {}

func write(path string, data []byte, perm fs.FileMode) error {
	dir, base := filepath.Split(path)
	dir = filepath.Clean(dir)
	if base == "" {
		return errors.New("no file name")
	}
	if err := mkdirAll(dir); err != nil {
		return err
	}
	removeStale(dir, base)
	tmp, err := os.CreateTemp(dir, "."+base+tempMark+"*")
	if err != nil {
		return err
	}
	step("created")
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	step("written")
	if err := tmp.Chmod(perm); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	step("synced")
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	ok = true
	step("renamed")
	if err := syncDir(dir); err != nil {
		return err
	}
	step("dir-synced")
	return nil
}

// removeStale removes the temporary files a killed Write of the same name
// left behind, so that kills do not pile them up. Only one avsidecar
// writes its state files at a time (the install holds a lock on the root).
func removeStale(dir, base string) {
	stale, _ := filepath.Glob(filepath.Join(dir, "."+escapeGlob(base)+tempMark+"*"))
	for _, f := range stale {
		os.Remove(f)
	}
}

// escapeGlob quotes the metacharacters of filepath.Match in s.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[\`) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// mkdirAll makes dir and its missing parents, each fsynced into its parent,
// so that a file written into a new directory is not lost with it.
func mkdirAll(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// syncDir fsyncs a directory, which makes the names in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
