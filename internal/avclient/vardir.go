package avclient

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// StateDir is /var/avamar: where many installs keep the client's state
// (avagent.cfg, cid.bin, avagent.log, the file cache f_cache.dat) rather
// than in the prefix's var/. Relax-and-Recover's Avamar support copies
// /var/avamar/avagent.cfg and /var/avamar/cid.bin and appends
// /var/avamar/avagent.log, and excludes $AVA_ROOT_DIR/var/*.
const StateDir = "/var/avamar"

// Prefixes are where an installed client is looked for when AVAMAR_PREFIX
// is unset, in this order: "AVA_ROOT_DIR is relocatable - default location
// is either /usr/local/avamar or /opt/avamar" (Relax-and-Recover's Avamar
// support, usr/share/rear/conf/default.conf).
var Prefixes = []string{"/usr/local/avamar", "/opt/avamar"}

// FindPrefix returns the first of Prefixes that holds an installed client
// (its bin/avagent.bin) inside root, or "" when none does. /opt/avamar
// holding only the client's RPM (AVAMAR_RPM's default place) is no client.
func FindPrefix(root string) string {
	for _, p := range Prefixes {
		if fi, err := os.Stat(filepath.Join(root, p, "bin/avagent.bin")); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// How Locate found the var dir, as shown in the status.
const (
	// VarConfigured is AVAMAR_VAR_DIR.
	VarConfigured = "configured"
	// VarSymlink is a prefix var/ that is a symbolic link to it.
	VarSymlink = "symlink"
	// VarStateDir is /var/avamar, present in the root.
	VarStateDir = "state-dir"
	// VarPrefix is the prefix's own var/.
	VarPrefix = "prefix"
)

// Layout is where the installed client lives, as the status shows it.
type Layout struct {
	// Prefix is the host path of the installation prefix.
	Prefix string `json:"prefix"`
	// VarDir is the host path of the directory with the client's state
	// and logs.
	VarDir string `json:"var_dir"`
	// FoundBy says how VarDir was found: configured, symlink, state-dir or
	// prefix.
	FoundBy string `json:"found_by"`
}

// stateFiles are the files whose presence says a directory holds a
// client's state.
var stateFiles = []string{"avagent.cfg", "cid.bin", "avagent.log", "f_cache.dat"}

// Locate finds the directory the installed client keeps its state in and
// returns the client with Var set to it. configured is the host path of
// AVAMAR_VAR_DIR, or empty. Without it, in this order:
//
//   - the prefix's var/ is a symbolic link (the package or the image links
//     it to /var/avamar): its target, resolved inside Root;
//   - /var/avamar exists in Root (the package made it, or it is the
//     persistent volume's mount point) and either holds client state or
//     the prefix's var/ holds none;
//   - the prefix's var/.
//
// Locate runs once the package is installed: the package makes the
// directories. It fails only for a configured directory that is missing or
// a link that leads nowhere.
func (c Client) Locate(configured string) (Client, Layout, error) {
	prefixVar := filepath.Join(c.Prefix, "var")
	found := func(dir, how string) (Client, Layout, error) {
		c.Var = dir
		return c, Layout{Prefix: c.Prefix, VarDir: dir, FoundBy: how}, nil
	}
	if configured != "" {
		if !isDir(configured) {
			return c, Layout{}, fmt.Errorf("AVAMAR_VAR_DIR %s is not a directory", configured)
		}
		return found(configured, VarConfigured)
	}
	if fi, err := os.Lstat(prefixVar); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, err := c.resolveInRoot(prefixVar)
		if err != nil {
			return c, Layout{}, fmt.Errorf("client var dir: %w", err)
		}
		return found(target, VarSymlink)
	}
	state := filepath.Join(c.Root, StateDir)
	if isDir(state) && (holdsState(state) || !holdsState(prefixVar)) {
		return found(state, VarStateDir)
	}
	return found(prefixVar, VarPrefix)
}

// resolveInRoot follows the symbolic links of path, reading absolute
// targets as paths inside Root (as the client, chrooted or in its
// container, sees them), and returns the directory it leads to.
func (c Client) resolveInRoot(path string) (string, error) {
	for range 16 {
		fi, err := os.Lstat(path)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s is not a directory", path)
			}
			return path, nil
		}
		target, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			path = filepath.Join(c.Root, filepath.Clean(target))
		} else {
			path = filepath.Join(filepath.Dir(path), target)
		}
		if rel, err := filepath.Rel(c.Root, path); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return "", fmt.Errorf("%s leads out of the root", target)
		}
	}
	return "", errors.New("too many levels of symbolic links")
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// holdsState reports whether dir holds one of a client's state files.
func holdsState(dir string) bool {
	for _, name := range stateFiles {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}
