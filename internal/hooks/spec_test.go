package hooks

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	s, err := Parse([]byte(`{
		"pre": [
			{"command": ["psql", "-c", "CHECKPOINT"], "timeout": "2m"},
			{"name": "flush", "http": {"url": "http://127.0.0.1:8080/flush?token=x"}, "on_error": "continue"}
		],
		"post": [{"name": "resume", "http": {"url": "https://app/resume", "method": "PUT", "headers": {"Authorization": "Bearer y"}}}]
	}`))
	if err != nil {
		t.Fatal(err)
	}
	pre, post := s.Pre, s.Post
	if len(pre) != 2 || pre[0].Name != "pre-1" || pre[0].Kind() != "command" || time.Duration(pre[0].Timeout) != 2*time.Minute ||
		pre[0].OnError != OnErrorFail {
		t.Errorf("first pre hook %+v", pre[0])
	}
	if pre[1].Kind() != "http" || pre[1].HTTP.Method != "POST" || time.Duration(pre[1].Timeout) != DefaultTimeout || pre[1].OnError != OnErrorContinue {
		t.Errorf("second pre hook %+v", pre[1])
	}
	if len(post) != 1 || post[0].HTTP.Method != "PUT" || post[0].HTTP.Headers["Authorization"] != "Bearer y" {
		t.Errorf("post hook %+v", post)
	}
	if s, err := Parse([]byte(`{}`)); err != nil || len(s.Pre)+len(s.Post) != 0 {
		t.Errorf("empty spec: %+v, %v", s, err)
	}
}

func TestParseHostile(t *testing.T) {
	for _, tt := range []struct{ name, json, want string }{
		{"not json", `{"pre": [`, "hooks:"},
		{"two values", `{} {}`, "more than one JSON value"},
		{"unknown field", `{"pre": [{"cmd": ["x"]}]}`, `unknown field "cmd"`},
		{"unknown phase", `{"during": []}`, `unknown field "during"`},
		{"nothing to do", `{"pre": [{"name": "x"}]}`, "give a command or an http call"},
		{"both", `{"pre": [{"command": ["x"], "http": {"url": "http://a"}}]}`, "not more"},
		{"empty program", `{"pre": [{"command": [""]}]}`, "program is empty"},
		{"file url", `{"pre": [{"http": {"url": "file:///etc/passwd"}}]}`, "http.url must be"},
		{"no host", `{"pre": [{"http": {"url": "http:///x"}}]}`, "http.url must be"},
		{"header injection", `{"pre": [{"http": {"url": "http://a", "headers": {"X": "a\r\nHost: b"}}}]}`, "line break"},
		{"twice", `{"pre": [{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}]}`, "name used twice"},
		{"name line", `{"pre": [{"name": "a\nb", "command": ["x"]}]}`, "one line"},
		{"bad timeout", `{"pre": [{"command": ["x"], "timeout": "soon"}]}`, "duration"},
		{"timeout number", `{"pre": [{"command": ["x"], "timeout": 30}]}`, "duration is text"},
		{"negative timeout", `{"pre": [{"command": ["x"], "timeout": "-1s"}]}`, "timeout must be positive"},
		{"huge timeout", `{"post": [{"command": ["x"], "timeout": "7h"}]}`, "at most 6h"},
		{"policy", `{"post": [{"command": ["x"], "on_error": "ignore"}]}`, `on_error "ignore"`},
		{"all at once", `{"pre": [{"command": ["x"], "on_error": "?"}], "post": [{"name": "p"}]}`, `on_error "?"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.json))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, tt.want)
			}
		})
	}
	_, err := Parse([]byte(`{"pre": [{"command": ["x"], "on_error": "?"}], "post": [{"name": "p"}]}`))
	if !strings.Contains(err.Error(), `post hook "p": give a command`) {
		t.Errorf("every problem is named: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"pre": [{"command": ["true"], "timeout": "1s"}], "post": [{"http": {"url": "http://a/b"}}]}`))
	f.Add([]byte(`{"pre": [{"name": "", "http": {"url": "https://x", "headers": {"a": "b"}}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		for _, h := range append(s.Pre, s.Post...) {
			if h.Name == "" || (h.HTTP == nil) == (len(h.Command) == 0) || h.Timeout <= 0 ||
				time.Duration(h.Timeout) > MaxTimeout || (h.OnError != OnErrorFail && h.OnError != OnErrorContinue) {
				t.Fatalf("Parse accepted %+v", h)
			}
		}
	})
}
