package install

import (
	"github.com/avsidecar/avsidecar/internal/rpm"
	"github.com/rs/zerolog"
)

// readPackage reads the package's headers and starts checking its
// digests: at once, reading it whole, or, when nothing installed here
// could be compared with it and its header (scriptlets included) checks
// out already, on its own goroutine while the payload is extracted (apply
// waits for it before the first change that is not undone).
func (j *job) readPackage(st state) (*rpm.Package, *check, error) {
	p, err := rpm.Read(j.file, j.fp.Size)
	if err != nil {
		return nil, nil, err
	}
	step("read")
	if len(p.Signatures) > 0 {
		j.log.Warn().Strs("signatures", p.Signatures).Msg("package is signed but its signature is not checked: no keyring")
	}
	trusted, err := p.VerifyHeader()
	if err != nil {
		return nil, nil, err
	}
	if trusted && !st.current {
		return p, j.verifyLater(p), nil
	}
	v, err := p.Verify(j.file)
	if err != nil {
		return nil, nil, err
	}
	logVerified(j.log, p, v)
	return p, &check{v: v}, nil
}

// missing compares, when this very package is installed already (same
// SHA-256, once it is known), the files its receipt lists with the disk:
// see inspect. Otherwise intact is false: the package is installed whole.
func (j *job) missing(st state, chk *check) (missing []receiptFile, intact bool) {
	if !st.current || chk.running != nil || st.old.SHA256 != chk.v.SHA256 {
		return nil, false
	}
	return j.inspect(st.old)
}

// check is the package's verification (rpm.Verify): done, or running on
// its own goroutine for wait to collect.
type check struct {
	log     zerolog.Logger
	pkg     *rpm.Package
	running chan checked // nil once the verification is done
	v       rpm.Verification
	err     error
}

type checked struct {
	v   rpm.Verification
	err error
}

// verifyLater starts rpm.Verify on its own goroutine. A panic there is the
// verification's error (ErrInternal), not the end of the process.
func (j *job) verifyLater(p *rpm.Package) *check {
	done := make(chan checked, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- checked{err: panicError(v, j.log)}
			}
		}()
		step("verify")
		v, err := p.Verify(j.file)
		done <- checked{v, err}
	}()
	return &check{log: j.log, pkg: p, running: done}
}

// wait returns the verification, once it is done.
func (c *check) wait() (rpm.Verification, error) {
	if c.running != nil {
		r := <-c.running
		c.running, c.v, c.err = nil, r.v, r.err
		if r.err == nil {
			logVerified(c.log, c.pkg, r.v)
		}
	}
	return c.v, c.err
}

func logVerified(log zerolog.Logger, p *rpm.Package, v rpm.Verification) {
	log.Info().Str("name", p.Name).Str("version", p.Version+"-"+p.Release).Str("arch", p.Arch).
		Str("sha256", v.SHA256).Strs("verified", v.Checked).Str("compression", p.Compressor).Msg("package verified")
}
