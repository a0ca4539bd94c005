package install

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes what the tests share across the run: the rpmbuild
// packages and the avsidecar binary.
func TestMain(m *testing.M) {
	code := m.Run()
	rpmbuildCache.Range(func(_, p any) bool {
		_ = os.RemoveAll(filepath.Dir(filepath.Dir(filepath.Dir(p.(string)))))
		return true
	})
	if binaryPath != "" {
		_ = os.RemoveAll(filepath.Dir(binaryPath))
	}
	os.Exit(code)
}
