package install

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"
)

// Paths inside the root are followed as a process chrooted into it, like
// rpm --root, follows them: a symlink's absolute target starts again at
// the root, and ".." stops there. So the /var/run -> /run link of Debian's
// images, or an operator's /opt/app -> /data/app, lead where they lead in
// the container. os.Root, which refuses such links (to the host they
// would escape), then opens what they lead to: it still refuses anything
// that would leave the root, were a link swapped under the install.

// maxLinks bounds the symlinks one resolution follows, as Linux's
// MAXSYMLINKS does.
const maxLinks = 40

// resolver remembers the directories it resolved: a package's files share
// few. Whatever changes a directory's path in the root (an old symlink
// removed) must reset it.
type resolver map[string]string

// dirOf returns the path in the root (relative, as os.Root takes it, "."
// for the root itself) of dir, an absolute path inside the root, every
// symlink among its components followed. A missing component ends the
// resolution: it and the rest are taken as they are, for the install to
// make.
func (j *job) dirOf(dir string) (string, error) {
	dir = path.Clean("/" + dir)
	if dir == "/" {
		return ".", nil
	}
	if r, ok := j.resolved[dir]; ok {
		return r, nil
	}
	parent, base := path.Split(dir)
	rp, err := j.dirOf(parent)
	if err != nil {
		return "", err
	}
	r, err := j.follow(rp, base)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", dir, err)
	}
	if j.resolved == nil {
		j.resolved = resolver{}
	}
	j.resolved[dir] = r
	return r, nil
}

// pathOf returns the path in the root of p, an absolute path inside the
// root: its directory resolved (dirOf), its last component as it is.
func (j *job) pathOf(p string) (string, error) {
	if p == "/" {
		return ".", nil
	}
	dir, base := path.Split(p)
	rd, err := j.dirOf(dir)
	if err != nil {
		return "", err
	}
	return relJoin(rd, base), nil
}

// follow resolves name in dir, a resolved directory, following symlinks
// component by component: ".." in a link's target is the parent of what
// the link before it led to, as the kernel has it, not a textual one.
func (j *job) follow(dir, name string) (string, error) {
	var out []string
	if dir != "." {
		out = strings.Split(dir, "/")
	}
	todo := []string{name}
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		cur := relJoin(strings.Join(out, "/"), c)
		st, err := j.root.Lstat(cur)
		if err != nil || st.Mode()&fs.ModeSymlink == 0 {
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", err
			}
			out = append(out, c)
			continue
		}
		if links++; links > maxLinks {
			return "", syscall.ELOOP
		}
		target, err := j.root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			out = out[:0]
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	if len(out) == 0 {
		return ".", nil
	}
	return strings.Join(out, "/"), nil
}

// relJoin joins a resolved directory and a name.
func relJoin(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}

// locate resolves where an item goes in the root: its directories
// followed (a directory item's own symlink is followed by makeDir).
func (j *job) locate(it *item) error {
	rel, err := j.pathOf(it.dest)
	if err != nil {
		return err
	}
	it.rel, it.tmp = rel, rel+tmpSuffix
	return nil
}
