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
		{"session after", `{"post": [{"session": {"command": ["psql"], "dialect": "psql", "pre": ["SELECT 1"]}}]}`, "a session starts in the pre phase"},
		{"session dialect", `{"pre": [{"session": {"command": ["sqlite3"], "dialect": "sqlite", "pre": ["SELECT 1"]}}]}`, `dialect "sqlite"`},
		{"buffered mariadb", `{"pre": [{"session": {"command": ["mariadb"], "dialect": "mariadb", "pre": ["SELECT 1"]}}]}`, "needs --unbuffered"},
		{"session without statements", `{"pre": [{"session": {"command": ["psql"], "dialect": "psql"}}]}`, "session.pre needs a statement"},
		{"two statements a line", `{"pre": [{"session": {"command": ["psql"], "dialect": "psql", "pre": ["SELECT 1;\nSELECT 2"]}}]}`, "line break"},
		{"session and command", `{"pre": [{"command": ["x"], "session": {"command": ["psql"], "dialect": "psql", "pre": ["SELECT 1"]}}]}`, "not more"},
		{"short freeze", `{"max_freeze": "10ms"}`, "max_freeze must be from 1s to 24h"},
		{"long freeze", `{"max_freeze": "25h"}`, "max_freeze must be"},
		{"too many hooks", `{"pre": [` + strings.Repeat(`{"command": ["true"]},`, MaxHooks) + `{"command": ["true"]}]}`, "33 hooks, at most 32"},
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
	f.Add([]byte(`{"max_freeze": "2m", "pre": [{"session": {"command": ["mariadb", "-n"], "dialect": "mariadb", "pre": ["FLUSH TABLES WITH READ LOCK"], "post": ["UNLOCK TABLES"]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		if s.MaxFreeze < Duration(time.Second) || time.Duration(s.MaxFreeze) > MaxMaxFreeze || len(s.Pre) > MaxHooks || len(s.Post) > MaxHooks {
			t.Fatalf("Parse accepted %+v", s)
		}
		for _, h := range append(s.Pre, s.Post...) {
			kinds := 0
			for _, set := range []bool{h.HTTP != nil, len(h.Command) > 0, h.Session != nil} {
				if set {
					kinds++
				}
			}
			if h.Name == "" || kinds != 1 || h.Timeout <= 0 ||
				time.Duration(h.Timeout) > MaxTimeout || (h.OnError != OnErrorFail && h.OnError != OnErrorContinue) {
				t.Fatalf("Parse accepted %+v", h)
			}
		}
	})
}
