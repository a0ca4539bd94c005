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
	"strings"
	"time"
)

// lsEntry is one entry of /v1/files, /v1/stat or /v1/walk.
type lsEntry struct {
	Path       string `json:"path,omitempty"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	Size       int64  `json:"size"`
	Mode       string `json:"mode"`
	Mtime      string `json:"mtime"`
	LinkTarget string `json:"link_target"`
	Error      string `json:"error,omitempty"`
}

// lsCmd lists a directory through the local browse API, for kubectl exec:
// a table like ls -l, or JSON lines with --json; -r walks the tree.
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
	emit := func(e *lsEntry) error {
		if *asJSON {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			out.Write(append(b, '\n'))
			return nil
		}
		name := e.Name
		if *recursive || e.Path != "" && name == "" {
			name = e.Path
		}
		if e.Error != "" {
			fmt.Fprintf(stderr, "avsidecar ls: %s: %s\n", e.Path, e.Error)
			return nil
		}
		if e.LinkTarget != "" {
			name += " -> " + e.LinkTarget
		}
		mtime := e.Mtime
		if t, err := time.Parse(time.RFC3339, e.Mtime); err == nil {
			mtime = t.Local().Format("2006-01-02 15:04")
		}
		_, err := fmt.Fprintf(out, "%s %12d %s %s\n", lsMode(e.Type, e.Mode), e.Size, mtime, name)
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

func (c *browseClient) get(ctx context.Context, endpoint string, q url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("browse api: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var body struct {
			Error string `json:"error"`
		}
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&body) != nil || body.Error == "" {
			body.Error = resp.Status
		}
		return nil, &apiError{Code: resp.StatusCode, Msg: body.Error}
	}
	return resp, nil
}

func (c *browseClient) list(ctx context.Context, path string, withPath bool, emit func(*lsEntry) error) error {
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
		var page struct {
			Path       string    `json:"path"`
			Entries    []lsEntry `json:"entries"`
			NextCursor string    `json:"next_cursor"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("%s: decode listing: %w", path, err)
		}
		for i := range page.Entries {
			e := &page.Entries[i]
			if withPath {
				e.Path = strings.TrimSuffix(page.Path, "/") + "/" + e.Name
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

func (c *browseClient) stat(ctx context.Context, path string, emit func(*lsEntry) error) error {
	resp, err := c.get(ctx, "/v1/stat", url.Values{"path": {path}})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	var e lsEntry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return fmt.Errorf("%s: decode entry: %w", path, err)
	}
	e.Name = ""
	return emit(&e)
}

func (c *browseClient) walk(ctx context.Context, path string, emit func(*lsEntry) error) error {
	resp, err := c.get(ctx, "/v1/walk", url.Values{"path": {path}})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e lsEntry
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
