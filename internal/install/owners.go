package install

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"
)

// idMap resolves the owner and group names of a package's files as rpm
// does: from the root's own /etc/passwd and /etc/group (rpm looks them up
// after its chroot), falling back to root with a warning for an unknown
// name.
type idMap struct {
	users, groups map[string]int
	log           zerolog.Logger
	once          sync.Map // names already warned about
}

func loadIDs(root *os.Root, log zerolog.Logger) *idMap {
	return &idMap{
		users:  readIDs(root, "etc/passwd"),
		groups: readIDs(root, "etc/group"),
		log:    log,
	}
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

func (m *idMap) lookup(user, group string) (uid, gid int) {
	return m.id(m.users, user, "user"), m.id(m.groups, group, "group")
}

func (m *idMap) id(ids map[string]int, name, kind string) int {
	if name == "" {
		return 0
	}
	if id, ok := ids[name]; ok {
		return id
	}
	if _, warned := m.once.LoadOrStore(kind+":"+name, true); !warned {
		m.log.Warn().Str(kind, name).Msg("unknown owner, using root")
	}
	return 0
}
