package rpm

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Hash is a digest algorithm as RPM headers name them (PGPHASHALGO).
type Hash int

// The digest algorithms RPM headers use.
const (
	MD5    Hash = 1
	SHA1   Hash = 2
	SHA256 Hash = 8
	SHA384 Hash = 9
	SHA512 Hash = 10
	SHA224 Hash = 11
)

// New returns a new hash of the algorithm, or nil for an unsupported one.
func (a Hash) New() hash.Hash {
	switch a {
	case MD5:
		return md5.New()
	case SHA1:
		return sha1.New()
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	case SHA224:
		return sha256.New224()
	}
	return nil
}

// HashOfDigest names the algorithm of a hex digest by its length, or 0.
func HashOfDigest(d string) Hash {
	switch len(d) {
	case 32:
		return MD5
	case 40:
		return SHA1
	case 56:
		return SHA224
	case 64:
		return SHA256
	case 96:
		return SHA384
	case 128:
		return SHA512
	}
	return 0
}

// Verification is the outcome of checking the digests an RPM carries.
type Verification struct {
	// SHA256 is the digest of the whole file.
	SHA256 string
	// Checked says what was verified, for the log.
	Checked []string
	// Signature is "none", or which signatures are present but not
	// checked.
	Signature string
}

// VerifyHeader checks what can be checked without reading the payload:
// the size the signature gives, and the header's own digest (SHA-256, or
// SHA-1). trusted is false, and err nil, for a package whose header has
// no digest of its own (a legacy one, whose MD5 covers header and payload
// together): nothing of its header, scriptlets included, may be trusted
// before Verify has read the payload.
func (p *Package) VerifyHeader() (trusted bool, err error) {
	size := p.Size
	if want := firstInt(p.sigTags, sigLongSize, sigSize); want >= 0 && want != size-p.HeaderOffset {
		return false, unusable("size mismatch: the package says %d bytes of header and payload, the file has %d (truncated or extended)", want, size-p.HeaderOffset)
	}
	if want := str(p.sigTags, sigSHA256); want != "" {
		if got := sum(sha256.New(), p.hdr); got != strings.ToLower(want) {
			return false, unusable("header SHA-256 mismatch: want %s, got %s", want, got)
		}
		return true, nil
	}
	if want := str(p.sigTags, sigSHA1); want != "" {
		if got := sum(sha1.New(), p.hdr); got != strings.ToLower(want) {
			return false, unusable("header SHA-1 mismatch: want %s, got %s", want, got)
		}
		return true, nil
	}
	return false, nil
}

// Verify reads the whole file once and checks every digest the package
// carries: header SHA-256 (or SHA-1), payload digest, and the legacy MD5 of
// header and payload. A package that carries no digest over its header
// and none over its payload is refused: nothing would protect the bytes
// an installer is about to write.
func (p *Package) Verify(f io.ReaderAt) (Verification, error) {
	var v Verification
	size := p.Size
	payloadLen := size - p.PayloadOffset
	headerOK, err := p.VerifyHeader()
	if err != nil {
		return v, err
	}
	switch {
	case !headerOK:
	case str(p.sigTags, sigSHA256) != "":
		v.Checked = append(v.Checked, "header-sha256")
	default:
		v.Checked = append(v.Checked, "header-sha1")
	}

	var writers []io.Writer
	var payloadHash hash.Hash
	var payloadWant string
	if want := p.tags.GetTag(tagPayloadDigest).StringSlice(); len(want) > 0 && want[0] != "" {
		algo := SHA256
		if a := ints(p.tags, tagPayloadDigestAlgo); len(a) == 1 {
			algo = Hash(a[0])
		}
		if payloadHash = algo.New(); payloadHash == nil {
			return v, unusable("unsupported payload digest algorithm %d", algo)
		}
		payloadWant = strings.ToLower(want[0])
		writers = append(writers, payloadHash)
	}
	var md5Hash hash.Hash
	md5Want := p.sigTags.GetTag(sigMD5).Bytes()
	if len(md5Want) > 0 && (payloadHash == nil || !headerOK) {
		// Only legacy packages need it: the payload digest and the header
		// SHA-256 cover the same bytes with a stronger hash.
		md5Hash = md5.New()
		md5Hash.Write(p.hdr)
		writers = append(writers, md5Hash)
	}
	if !headerOK && md5Hash == nil {
		return v, unusable("no digest over the header: refusing an unverifiable package")
	}
	if payloadHash == nil && md5Hash == nil {
		return v, unusable("no digest over the payload: refusing an unverifiable package")
	}

	// Two readers of the same (cached) bytes, one per core: the whole file
	// for its SHA-256, the payload for its digests.
	fileHash := sha256.New()
	var g errgroup.Group
	g.Go(func() error {
		if _, err := io.CopyBuffer(fileHash, io.NewSectionReader(f, 0, size), make([]byte, bufSize(size))); err != nil {
			return fmt.Errorf("read rpm: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		n, err := io.CopyBuffer(io.MultiWriter(writers...), io.NewSectionReader(f, p.PayloadOffset, payloadLen), make([]byte, bufSize(payloadLen)))
		if err != nil {
			return fmt.Errorf("read rpm: %w", err)
		}
		if n != payloadLen {
			return unusable("read payload: file truncated")
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return v, err
	}
	if payloadHash != nil {
		if got := hex.EncodeToString(payloadHash.Sum(nil)); got != payloadWant {
			return v, unusable("payload digest mismatch: want %s, got %s", payloadWant, got)
		}
		v.Checked = append(v.Checked, "payload-digest")
	}
	if md5Hash != nil {
		if got := md5Hash.Sum(nil); !bytes.Equal(got, md5Want) {
			return v, unusable("header and payload MD5 mismatch")
		}
		v.Checked = append(v.Checked, "md5")
	}
	v.SHA256 = hex.EncodeToString(fileHash.Sum(nil))
	v.Signature = "none"
	if len(p.Signatures) > 0 {
		v.Signature = strings.Join(p.Signatures, ",") + " present, not checked"
	}
	return v, nil
}

func sum(h hash.Hash, b []byte) string {
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
