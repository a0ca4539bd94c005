package pid1

import (
	"fmt"
	"go/types"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"

	"github.com/avsidecar/avsidecar/internal/testkit"
)

// selfPath is this package's import path: the one owner of wait(2).
const selfPath = "github.com/avsidecar/avsidecar/internal/pid1"

// waitingMethods are the methods of *exec.Cmd that call wait(2): once Reap
// runs, each would race the reaper for the child's status (see the package
// doc). (*os.Process).Wait and the wait system calls race it the same way.
var waitingMethods = []string{"Wait", "Run", "Output", "CombinedOutput"}

// waitingFuncs are the system calls that wait, by package.
var waitingFuncs = map[string][]string{
	"syscall":               {"Wait4"},
	"golang.org/x/sys/unix": {"Wait4", "Waitid"},
}

// TestNothingElseWaits enforces the reaper's rule, that nothing but this
// package waits for a child: no package linked into avsidecar, its
// dependencies included, may use a waiting method of *exec.Cmd (a call, a
// method value or a method expression, also through an embedded Cmd),
// (*os.Process).Wait or a wait system call.
// Test files are not PID 1 code and are not checked, nor are cmd/avkit,
// internal/testkit and bench, which avsidecar does not link. A call through
// an interface or reflection is beyond this check.
func TestNothingElseWaits(t *testing.T) {
	root, err := testkit.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	linked, err := linkedPackages(root, "./cmd/avsidecar")
	if err != nil {
		t.Fatal(err)
	}
	var check []string
	for _, p := range linked {
		if p != selfPath && !slices.Contains(waitDefiners, p) {
			check = append(check, p)
		}
	}
	if !slices.Contains(check, "github.com/avsidecar/avsidecar/internal/supervise") {
		t.Fatalf("the packages to check miss internal/supervise, which starts avagent: %v", check)
	}
	uses, err := waitingUses(root, check...)
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) > 0 {
		t.Errorf("only internal/pid1 may wait for a child once the reaper runs: start it with pid1.Start or pid1.StartLines and wait with Process.Wait instead (see internal/pid1's package doc):\n%s",
			strings.Join(uses, "\n"))
	}
	t.Logf("checked %d packages", len(check))
}

// TestCheckFindsWaits proves the check of TestNothingElseWaits finds what
// it must: every line of testdata/waits marked "// waits", and no other.
func TestCheckFindsWaits(t *testing.T) {
	dir, err := filepath.Abs("testdata/waits")
	if err != nil {
		t.Fatal(err)
	}
	uses, err := waitingUses(dir, ".")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "waits.go"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i, line := range strings.Split(string(src), "\n") {
		if strings.HasSuffix(line, "// waits") {
			want = append(want, fmt.Sprintf("waits.go:%d", i+1))
		}
	}
	var got []string
	for _, u := range uses {
		file, _, _ := strings.Cut(u, ": ")
		parts := strings.Split(file, ":") // path:line:column
		got = append(got, filepath.Base(parts[0])+":"+parts[1])
	}
	if len(want) < 8 {
		t.Fatalf("testdata/waits marks %d lines, want one per waiting function at least", len(want))
	}
	if !slices.Equal(got, want) {
		t.Errorf("the check found\n%s\nwant the marked lines\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// waitDefiners are the packages that define the waiting functions: their
// own uses are the functions themselves.
var waitDefiners = []string{"os", "os/exec", "syscall", "golang.org/x/sys/unix"}

// linkedPackages lists the packages pattern links, as the image is built
// (the shipped build tags): every package of a module, and the standard
// library's packages that import os/exec or syscall (the others cannot
// start a child, nor wait for one).
func linkedPackages(dir, pattern string) ([]string, error) {
	cfg := &packages.Config{
		Mode:       packages.NeedName | packages.NeedImports | packages.NeedDeps | packages.NeedModule,
		Dir:        dir,
		BuildFlags: []string{"-tags=" + testkit.BuildTags},
	}
	roots, err := packages.Load(cfg, pattern)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", pattern, err)
	}
	var out []string
	packages.Visit(roots, nil, func(p *packages.Package) {
		_, execs := p.Imports["os/exec"]
		_, sys := p.Imports["syscall"]
		if p.Module != nil || execs || sys {
			out = append(out, p.PkgPath)
		}
	})
	slices.Sort(out)
	return out, nil
}

// waitingUses type-checks the packages from source and returns every use
// of a function that waits for a child, as "file:line:column: name".
func waitingUses(dir string, patterns ...string) ([]string, error) {
	cfg := &packages.Config{
		Mode:       packages.NeedName | packages.NeedFiles | packages.NeedSyntax | packages.NeedTypes | packages.NeedTypesInfo,
		Dir:        dir,
		BuildFlags: []string{"-tags=" + testkit.BuildTags},
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	var out, broken []string
	for _, p := range pkgs {
		for _, e := range p.Errors {
			broken = append(broken, e.Error())
		}
		if p.TypesInfo == nil {
			continue
		}
		for id, obj := range p.TypesInfo.Uses {
			if waits(obj) {
				out = append(out, fmt.Sprintf("%s: %s", p.Fset.Position(id.Pos()), obj.(*types.Func).FullName()))
			}
		}
	}
	if len(broken) > 0 {
		// A package that does not type-check has not been checked.
		return nil, fmt.Errorf("type-check: %s", strings.Join(broken, "; "))
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(posKey(a), posKey(b)) })
	return out, nil
}

// posKey sorts "file:line:col: ..." by file, then by line as a number.
func posKey(s string) string {
	f := strings.SplitN(s, ":", 3)
	if len(f) < 3 {
		return s
	}
	return fmt.Sprintf("%s:%09s", f[0], f[1])
}

// waits reports whether obj is a function that waits for a child: a
// waiting method of *exec.Cmd, (*os.Process).Wait, or a wait system call.
func waits(obj types.Object) bool {
	fn, ok := obj.(*types.Func)
	if !ok || fn.Pkg() == nil {
		return false
	}
	pkg := fn.Pkg().Path()
	recv := fn.Signature().Recv()
	if recv == nil {
		return slices.Contains(waitingFuncs[pkg], fn.Name())
	}
	ptr, ok := recv.Type().(*types.Pointer)
	if !ok {
		return false
	}
	named, ok := ptr.Elem().(*types.Named)
	if !ok {
		return false
	}
	switch {
	case pkg == "os/exec" && named.Obj().Name() == "Cmd":
		return slices.Contains(waitingMethods, fn.Name())
	case pkg == "os" && named.Obj().Name() == "Process":
		return fn.Name() == "Wait"
	}
	return false
}
