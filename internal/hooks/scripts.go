package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/avsidecar/avsidecar/internal/atomicfile"
)

// Script names, in the client's scripts directory: what an Avamar
// administrator selects as the dataset's run-at-start and run-at-end
// scripts.
const (
	PreScript  = "avsidecar-pre.sh"
	PostScript = "avsidecar-post.sh"
)

// scriptMark is the second line of the scripts avsidecar writes, so that
// it never overwrites or removes a script it did not write.
const scriptMark = "# avsidecar hook script"

// installScripts writes the two scripts into the scripts directory, each
// only when its content changes, never over a file avsidecar did not
// write.
func (h *Hooks) installScripts() error {
	var installed []string
	for _, s := range []struct{ name, phase string }{{PreScript, PhasePre}, {PostScript, PhasePost}} {
		path := filepath.Join(h.cfg.ScriptsDir, s.name)
		if b, err := os.ReadFile(path); err == nil && !strings.HasPrefix(string(b), "#!/bin/sh\n"+scriptMark) {
			return fmt.Errorf("install %s: a script avsidecar did not write is there", path)
		}
		changed, err := atomicfile.WriteIfChanged(path, []byte(script(h.cfg.Command, h.cfg.Socket, s.phase)), 0o755)
		if err != nil {
			return fmt.Errorf("install hook script: %w", err)
		}
		if changed {
			h.log.Info().Str("path", path).Msg("hook script installed")
		}
		installed = append(installed, path)
	}
	h.mu.Lock()
	h.st.Scripts = installed
	h.mu.Unlock()
	return nil
}

// script is the text of a phase's script.
func script(command, socket, phase string) string {
	return "#!/bin/sh\n" + scriptMark + " (written at every start of avsidecar).\n" +
		"# Select it in the Avamar dataset as the run-" + map[string]string{PhasePre: "at-start", PhasePost: "at-end"}[phase] +
		" script: it runs the sidecar's " + phase + " hooks.\n" +
		"exec " + quote(command) + " hook --socket " + quote(socket) + " " + phase + " \"$@\"\n"
}

// quote is s in single quotes for /bin/sh.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
