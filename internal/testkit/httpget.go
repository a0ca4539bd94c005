package testkit

import (
	"io"
	"net/http"
	"time"
)

// Get is one GET of url with an optional bearer token, for tests that
// poll a server (a probe, a page): it returns the status code and the
// body, or code 0 and the error's text when there is no answer.
func Get(url, token string) (int, string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
