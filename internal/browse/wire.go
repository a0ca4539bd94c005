package browse

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/avsidecar/avsidecar/internal/fswalk"
)

// Entry is one entry as the API sends it: an element of the "entries" of
// /v1/files, the answer of /v1/stat, a line of /v1/walk. It is the one
// definition of that format: the server writes it with a hand-written
// encoder (no reflection, no allocation per entry) that is tested to write
// exactly what encoding/json writes for this type, and clients such as
// `avsidecar ls` decode it with encoding/json.
//
// File names are bytes, JSON strings are text. Path, Name and LinkTarget
// are always text: a byte sequence that is not valid UTF-8 shows as U+FFFD,
// as encoding/json writes it. Whenever one of them is not valid UTF-8 its
// exact bytes are in the matching *B64 field (standard base64, with
// padding), which is present only then; RawPath, RawName and
// RawLinkTarget give the exact bytes either way. Send a path back as
// path_b64= or percent-encoded bytes in path=.
type Entry struct {
	// Path is the entry's full path; only walk lines and /v1/stat carry it.
	Path string `json:"path,omitempty"`
	// PathB64 is Path's exact bytes when they are not valid UTF-8.
	PathB64 string `json:"path_b64,omitempty"`
	// Name is the entry's name in its directory.
	Name string `json:"name"`
	// NameB64 is Name's exact bytes when they are not valid UTF-8.
	NameB64 string `json:"name_b64,omitempty"`
	// Type is file, dir, symlink or other.
	Type string `json:"type"`
	// Size is st_size in bytes.
	Size int64 `json:"size"`
	// Mode is the permission and special bits in octal ("0644", "4755").
	Mode string `json:"mode"`
	// Mtime is the modification time, RFC 3339 in UTC, whole seconds.
	Mtime string `json:"mtime"`
	// LinkTarget is a symlink's target as stored, "" for other types.
	LinkTarget string `json:"link_target"`
	// LinkTargetB64 is LinkTarget's exact bytes when they are not valid UTF-8.
	LinkTargetB64 string `json:"link_target_b64,omitempty"`
	// TargetType is, for a symlink in /v1/files and /v1/stat, the type of
	// what it leads to (file, dir or other), following links only inside
	// its root; absent for other entries, in walks, and for a link that
	// leads nowhere inside its root (dangling, a loop, or out of it).
	TargetType string `json:"target_type,omitempty"`
	// Error is set, with Path, on a walk line for a directory that could not
	// be read, and alone on a last line when a walk stopped early.
	Error string `json:"error,omitempty"`
}

// Page is the answer of /v1/files.
type Page struct {
	// Path is the directory listed, as the client knows it.
	Path string `json:"path"`
	// PathB64 is Path's exact bytes when they are not valid UTF-8.
	PathB64 string `json:"path_b64,omitempty"`
	// Entries is one page of the directory's entries, in the order asked.
	Entries []Entry `json:"entries"`
	// NextCursor continues the listing; "" on the last page.
	NextCursor string `json:"next_cursor"`
	// Total is the number of entries in the directory.
	Total int `json:"total"`
}

// Usage is the answer of /v1/du.
type Usage struct {
	// Path is the directory summed.
	Path string `json:"path"`
	// PathB64 is Path's exact bytes when they are not valid UTF-8.
	PathB64 string `json:"path_b64,omitempty"`
	fswalk.Usage
}

// raw returns the exact bytes of a text field and its *B64 companion.
func raw(text, b64 string) (string, error) {
	if b64 == "" {
		return text, nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", errors.New("invalid base64 name")
	}
	return string(b), nil
}

// RawPath is the exact bytes of Path.
func (e *Entry) RawPath() (string, error) { return raw(e.Path, e.PathB64) }

// RawName is the exact bytes of Name.
func (e *Entry) RawName() (string, error) { return raw(e.Name, e.NameB64) }

// RawLinkTarget is the exact bytes of LinkTarget.
func (e *Entry) RawLinkTarget() (string, error) { return raw(e.LinkTarget, e.LinkTargetB64) }

// RawPath is the exact bytes of Path.
func (p *Page) RawPath() (string, error) { return raw(p.Path, p.PathB64) }

// SetPath sets Path and PathB64 from exact bytes.
func (e *Entry) SetPath(p string) { e.Path, e.PathB64 = p, b64IfInvalid(p) }

func b64IfInvalid(s string) string {
	if utf8.ValidString(s) {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}

// newEntry is what appendEntry encodes, as the Entry value: the reference
// the encoder is tested against. dir is as for appendEntry.
func newEntry(dir string, e *fswalk.Entry, target string) Entry {
	w := Entry{
		Name:       e.Name,
		NameB64:    b64IfInvalid(e.Name),
		Type:       e.Type.String(),
		Size:       e.Size,
		Mode:       string(appendMode(nil, e.Mode)),
		Mtime:      e.MtimeTime().Truncate(time.Second).Format(time.RFC3339),
		LinkTarget: e.LinkTarget,
	}
	w.LinkTargetB64 = b64IfInvalid(e.LinkTarget)
	w.TargetType = target
	if dir != "" {
		w.SetPath(joinShown(dir, e.Name))
	}
	return w
}

func joinShown(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// appendEntry appends e as the JSON of an Entry. When dir is not empty,
// "path" comes first with the entry's full path, dir + "/" + name (walk
// lines and /v1/stat carry it); target is the TargetType, "" for none.
func appendEntry(b []byte, dir string, e *fswalk.Entry, target string) []byte {
	b = append(b, '{')
	if dir != "" {
		b = append(b, `"path":"`...)
		ok, okName := true, true
		if dir != "/" {
			b, ok = appendEscaped(b, dir)
		}
		b = append(b, '/')
		b, okName = appendEscaped(b, e.Name)
		b = append(b, '"', ',')
		if !ok || !okName {
			b = append(b, `"path_b64":"`...)
			b = appendB64(b, joinShown(dir, e.Name))
			b = append(b, '"', ',')
		}
	}
	b = append(b, `"name":"`...)
	b, ok := appendEscaped(b, e.Name)
	b = append(b, '"')
	if !ok {
		b = append(b, `,"name_b64":"`...)
		b = appendB64(b, e.Name)
		b = append(b, '"')
	}
	b = append(b, `,"type":"`...)
	b = append(b, e.Type.String()...)
	b = append(b, `","size":`...)
	b = strconv.AppendInt(b, e.Size, 10)
	b = append(b, `,"mode":"`...)
	b = appendMode(b, e.Mode)
	b = append(b, `","mtime":"`...)
	b = e.MtimeTime().Truncate(time.Second).AppendFormat(b, time.RFC3339)
	b = append(b, `","link_target":"`...)
	b, ok = appendEscaped(b, e.LinkTarget)
	b = append(b, '"')
	if !ok {
		b = append(b, `,"link_target_b64":"`...)
		b = appendB64(b, e.LinkTarget)
		b = append(b, '"')
	}
	if target != "" {
		b = append(b, `,"target_type":"`...)
		b = append(b, target...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendPathFields appends "path":P and, when P is not valid UTF-8,
// ,"path_b64":B, as Page, Usage and the error lines of a walk begin.
func appendPathFields(b []byte, p string) []byte {
	b = append(b, `"path":"`...)
	b, ok := appendEscaped(b, p)
	b = append(b, '"')
	if !ok {
		b = append(b, `,"path_b64":"`...)
		b = appendB64(b, p)
		b = append(b, '"')
	}
	return b
}

func appendB64(b []byte, s string) []byte {
	return base64.StdEncoding.AppendEncode(b, []byte(s))
}

// appendMode appends mode as at least four octal digits ("0644", "4755").
func appendMode(b []byte, mode uint32) []byte {
	for d := uint32(01000); d > 1 && mode < d; d >>= 3 {
		b = append(b, '0')
	}
	return strconv.AppendUint(b, uint64(mode), 8)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b, _ = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends the inside of a JSON string for s the way
// encoding/json does: control characters, quotes, backslashes, <, >, &,
// U+2028 and U+2029 are escaped, and invalid UTF-8 becomes U+FFFD. It
// reports whether s was valid UTF-8, that is, whether the text is exact.
func appendEscaped(b []byte, s string) ([]byte, bool) {
	valid := true
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			valid = false
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...), valid
}

// pathParam reads the path a request names: path= (percent-decoded once,
// so %FF is the byte 0xFF) or path_b64= (its exact bytes in base64,
// standard or URL-safe, padded or not), not both.
func pathParam(q url.Values) (string, error) {
	b64, hasB64 := q["path_b64"]
	if !hasB64 {
		return q.Get("path"), nil
	}
	if _, both := q["path"]; both || len(b64) != 1 {
		return "", errors.New("give path or path_b64, once")
	}
	s := b64[0]
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return string(b), nil
		}
	}
	return "", errors.New("path_b64 is not base64")
}
