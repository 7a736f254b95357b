package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// createKeys makes n keys through the admin API, one user each, ten users
// per team (the product's limit of active keys per team), and returns the
// full keys.
func createKeys(ctx context.Context, adminURL, token string, n int) ([]string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	keys := make([]string, 0, n)
	for i := range n {
		body, _ := json.Marshal(map[string]string{
			"name":    fmt.Sprintf("bench %d", i),
			"user_id": fmt.Sprintf("usr_bench_%d", i),
			"team_id": fmt.Sprintf("team_bench_%d", i/10),
			"role":    "admin",
		})
		req, err := http.NewRequestWithContext(ctx, "POST", adminURL+"/admin/v1/keys", bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Actor-Id", "loadbench")
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("creating key %d: %w", i, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return nil, fmt.Errorf("creating key %d: status %d: %s", i, resp.StatusCode, b)
		}
		var created struct {
			Key string `json:"key"`
		}
		if err := json.Unmarshal(b, &created); err != nil || created.Key == "" {
			return nil, fmt.Errorf("creating key %d: no key in the response", i)
		}
		keys = append(keys, created.Key)
	}
	return keys, nil
}

// checkForwarding sends one request through a keyproxy to the backend's
// echo and checks that the key was admitted, rate-limited (headers present),
// its owner named to the backend, and the credentials not passed on: the
// benchmark must measure the full path, not a refusal or a shortcut.
func checkForwarding(ctx context.Context, proxyAddr, key string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+proxyAddr+"/__echo", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	echo, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d: %s", resp.StatusCode, echo)
	case resp.Header.Get("RateLimit-Policy") == "" || resp.Header.Get("RateLimit") == "":
		return fmt.Errorf("no rate-limit headers: is the limiter on? %v", resp.Header)
	case !bytes.Contains(echo, []byte("X-Wevion-User-Id: usr_bench_")):
		return fmt.Errorf("backend saw no identity headers:\n%s", echo)
	case bytes.Contains(bytes.ToLower(echo), []byte("authorization:")):
		return fmt.Errorf("backend received the Authorization header:\n%s", echo)
	}
	return nil
}
