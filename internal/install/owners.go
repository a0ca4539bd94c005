package install

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// idMap resolves the owner and group names of a package's files as rpm
// does: from the root's own /etc/passwd and /etc/group (rpm looks them up
// after its chroot), falling back to root with a warning for an unknown
// name. Owners are only set when the process runs as root (chown); the
// names are resolved in any case, as they decide the set-ID bits (meta).
type idMap struct {
	users, groups map[string]int
	log           zerolog.Logger
	once          sync.Map // names already warned about
	chown         bool     // the process may change owners and capabilities (runs as root)
	capBits       int      // capabilities the kernel knows, for "all" in %caps
}

// loadIDs reads the root's owners and groups, and warns when the
// capabilities of items cannot be set.
func (j *job) loadIDs(items []*item) *idMap {
	m := &idMap{
		users:   readIDs(j.root, "etc/passwd"),
		groups:  readIDs(j.root, "etc/group"),
		log:     j.log,
		chown:   os.Geteuid() == 0,
		capBits: rpm.KernelCapBits(),
	}
	if !m.chown {
		n := 0
		for _, it := range items {
			if it.Caps != "" && !it.IsGhost() {
				n++
			}
		}
		if n > 0 {
			// rpm skips them without a word; an agent that needs
			// cap_net_raw would fail later and far from here.
			j.log.Warn().Int("files", n).Msg("file capabilities not set: setting them needs root")
		}
	}
	return m
}

// readIDs reads name:x:id lines; a missing file is an empty map.
func readIDs(root *os.Root, name string) map[string]int {
	ids := map[string]int{"root": 0}
	b, err := root.ReadFile(name)
	if err != nil {
		return ids
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if id, err := strconv.Atoi(f[2]); err == nil && id >= 0 {
			if _, dup := ids[f[0]]; !dup {
				ids[f[0]] = id
			}
		}
	}
	return ids
}

// lookup resolves a file's owner and group; known is false for each name
// the root does not know (it is root then).
func (m *idMap) lookup(user, group string) (uid, gid int, userKnown, groupKnown bool) {
	uid, userKnown = m.id(m.users, user, "user")
	gid, groupKnown = m.id(m.groups, group, "group")
	return uid, gid, userKnown, groupKnown
}

func (m *idMap) id(ids map[string]int, name, kind string) (int, bool) {
	if name == "" {
		return 0, true
	}
	if id, ok := ids[name]; ok {
		return id, true
	}
	if _, warned := m.once.LoadOrStore(kind+":"+name, true); !warned {
		m.log.Warn().Str(kind, name).Msg("unknown owner, using root")
	}
	return 0, false
}

// meta is what an item gets on disk: its owner and group, resolved in
// the root, and its permission bits. As with rpm (rpmfilesStat), a file
// whose owner is unknown loses its setuid bit, and one whose group is
// unknown its setgid bit: they would be root's.
func (m *idMap) meta(it *item) (uid, gid int, perm uint32) {
	uid, gid, userKnown, groupKnown := m.lookup(it.User, it.Group)
	perm = it.Mode & 0o7777
	if !userKnown {
		perm &^= unix.S_ISUID
	}
	if !groupKnown {
		perm &^= unix.S_ISGID
	}
	return uid, gid, perm
}
