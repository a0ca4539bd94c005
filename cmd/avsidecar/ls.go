package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/avsidecar/avsidecar/internal/browse"
)

// lsCmd lists a directory through the local browse API, for kubectl exec:
// a table like ls -l, or JSON lines with --json; -r walks the tree. Names
// in the table are printed as shellQuote writes them, so every name reads
// back exactly, also one that is not UTF-8; --json prints the API's
// entries, with the exact bytes of such a name in name_b64.
func lsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ls", flag.ContinueOnError)
	recursive := fs.Bool("r", false, "list the whole tree (through /v1/walk)")
	asJSON := fs.Bool("json", false, "print one JSON object per entry")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: avsidecar ls [-r] [--json] PATH")
		fs.PrintDefaults()
	}
	// Flags may come before or after PATH.
	var paths []string
	for {
		if help, err := parseFlags(fs, args, stdout); help || err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(paths) != 1 || !strings.HasPrefix(paths[0], "/") {
		return usageError("want exactly one absolute PATH: avsidecar ls [-r] [--json] PATH")
	}
	c, err := newBrowseClient()
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	emit := func(e *browse.Entry) error {
		if *asJSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			out.Write(append(b, '\n'))
			return nil
		}
		name, err := e.RawName()
		if err != nil {
			return err
		}
		path, err := e.RawPath()
		if err != nil {
			return err
		}
		if *recursive || path != "" && name == "" {
			name = path
		}
		if e.Error != "" {
			fmt.Fprintf(stderr, "avsidecar ls: %s: %s\n", shellQuote(path), e.Error)
			return nil
		}
		name = shellQuote(name)
		target, err := e.RawLinkTarget()
		if err != nil {
			return err
		}
		if target != "" {
			name += " -> " + shellQuote(target)
		}
		mtime := e.Mtime
		if t, err := time.Parse(time.RFC3339, e.Mtime); err == nil {
			mtime = t.Local().Format("2006-01-02 15:04")
		}
		_, err = fmt.Fprintf(out, "%s %12d %s %s\n", lsMode(e.Type, e.Mode), e.Size, mtime, name)
		return err
	}
	ctx := context.Background()
	if *recursive {
		return c.walk(ctx, paths[0], emit)
	}
	return c.list(ctx, paths[0], *asJSON, emit)
}

// browseClient talks to the local HTTP server of `avsidecar run`.
type browseClient struct {
	base  string
	token string
	http  *http.Client
}

func newBrowseClient() (*browseClient, error) {
	cfg, err := localConfig()
	if err != nil {
		return nil, err
	}
	local, err := localAddr(cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	c := &browseClient{
		base: "http://" + local,
		http: &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 2 * time.Minute,
		}},
	}
	if f := cfg.Host.BrowseTokenFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read browse token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	return c, nil
}

// apiError is an answer other than 200, with the server's message.
type apiError struct {
	Code int
	Msg  string
}

func (e *apiError) Error() string { return e.Msg }

// lsBusyTries is how many times ls asks while the server answers 503
// (its listing or walk slots all taken), waiting its Retry-After between.
const lsBusyTries = 4

// get asks once, and again after Retry-After while the server is busy.
func (c *browseClient) get(ctx context.Context, endpoint string, q url.Values) (*http.Response, error) {
	for try := 1; ; try++ {
		resp, retryAfter, err := c.getOnce(ctx, endpoint, q)
		var ae *apiError
		if try == lsBusyTries || !errors.As(err, &ae) || ae.Code != http.StatusServiceUnavailable || retryAfter < 0 {
			return resp, err
		}
		t := time.NewTimer(retryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// getOnce is one request; retryAfter is the server's Retry-After (at most
// 10s), or -1 without one.
func (c *browseClient) getOnce(ctx context.Context, endpoint string, q url.Values) (resp *http.Response, retryAfter time.Duration, err error) {
	retryAfter = -1
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return nil, retryAfter, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err = c.http.Do(req)
	if err != nil {
		return nil, retryAfter, fmt.Errorf("browse api: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var body struct {
			Error string `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body) != nil || body.Error == "" {
			body.Error = resp.Status
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			retryAfter = min(time.Duration(s)*time.Second, 10*time.Second)
		}
		return nil, retryAfter, &apiError{Code: resp.StatusCode, Msg: body.Error}
	}
	return resp, retryAfter, nil
}

func (c *browseClient) list(ctx context.Context, path string, withPath bool, emit func(*browse.Entry) error) error {
	q := url.Values{"path": {path}, "limit": {"1000"}}
	for {
		resp, err := c.get(ctx, "/v1/files", q)
		var ae *apiError
		if errors.As(err, &ae) && ae.Msg == "not a directory" {
			return c.stat(ctx, path, emit)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		var page browse.Page
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: decode listing: %w", path, err)
		}
		dir, err := page.RawPath()
		if err != nil {
			return fmt.Errorf("%s: decode listing: %w", path, err)
		}
		for i := range page.Entries {
			e := &page.Entries[i]
			if withPath {
				name, err := e.RawName()
				if err != nil {
					return fmt.Errorf("%s: decode listing: %w", path, err)
				}
				e.SetPath(strings.TrimSuffix(dir, "/") + "/" + name)
			}
			if err := emit(e); err != nil {
				return err
			}
		}
		if page.NextCursor == "" {
			return nil
		}
		q.Set("cursor", page.NextCursor)
	}
}

func (c *browseClient) stat(ctx context.Context, path string, emit func(*browse.Entry) error) error {
	resp, err := c.get(ctx, "/v1/stat", url.Values{"path": {path}})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	var e browse.Entry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return fmt.Errorf("%s: decode entry: %w", path, err)
	}
	e.Name, e.NameB64 = "", ""
	return emit(&e)
}

func (c *browseClient) walk(ctx context.Context, path string, emit func(*browse.Entry) error) error {
	resp, err := c.get(ctx, "/v1/walk", url.Values{"path": {path}})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e browse.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("%s: decode walk line: %w", path, err)
		}
		if err := emit(&e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: walk cut short: %w", path, err)
	}
	return nil
}

// lsMode renders type and octal mode like ls -l ("drwxr-xr-x").
func lsMode(typ, mode string) string {
	var m uint64
	fmt.Sscanf(mode, "%o", &m)
	b := []byte("?---------")
	switch typ {
	case "file":
		b[0] = '-'
	case "dir":
		b[0] = 'd'
	case "symlink":
		b[0] = 'l'
	}
	for i, c := range "rwxrwxrwx" {
		if m&(1<<(8-i)) != 0 {
			b[1+i] = byte(c)
		}
	}
	special := func(bit uint64, pos int, set, unset byte) {
		if m&bit != 0 {
			if b[pos] == 'x' {
				b[pos] = set
			} else {
				b[pos] = unset
			}
		}
	}
	special(04000, 3, 's', 'S')
	special(02000, 6, 's', 'S')
	special(01000, 9, 't', 'T')
	return string(b)
}

// shellSpecial are the characters that make a name quoted, as GNU ls's
// shell-escape quoting does: white space and what a POSIX shell treats
// specially.
const shellSpecial = " \t\n!\"#$&'()*;<=>?[\\]^`{|}~"

// shellQuote prints a name so that it reads back exactly: as it is when
// it is valid UTF-8 of printable characters and nothing a shell treats
// specially, otherwise as a bash/ksh/zsh ANSI-C string $'...' in which
// \\, \' and control characters are escaped and every byte that is not
// valid UTF-8 is \xHH (GNU ls's shell-escape style). Pasted into a shell
// it is the exact name; a bare name never starts with $' or contains a
// space, so the " -> " of a symlink cannot be mistaken either.
func shellQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsGraphic(r) || unicode.IsSpace(r) || strings.ContainsRune(shellSpecial, r) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r == '\\' || r == '\'':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString("\\n")
		case r == '\t':
			b.WriteString("\\t")
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", r)
		case !unicode.IsGraphic(r) && r != ' ':
			// Invisible or format characters: spelled out so that two
			// names that look alike do not print alike.
			for _, c := range []byte(s[i : i+size]) {
				fmt.Fprintf(&b, "\\x%02x", c)
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('\'')
	return b.String()
}
