package ledgerstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tenurehq/tenure/examples/ledger/audit"
)

// Client calls a store's HTTP API. Safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the store at base, an http or https URL
// such as "http://store:8080". hc nil uses http.DefaultClient; every call
// is bounded by its context, not by a client timeout.
func NewClient(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("store URL %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("store URL %q: want http://host:port or https://host:port", base)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(u.String(), "/"), hc: hc}, nil
}

// Fence raises the shard's fence to epoch (see Store.Fence) and returns
// the next period to charge. A refusal is a *RejectedError.
func (c *Client) Fence(ctx context.Context, req FenceRequest) (Result, error) {
	var res Result
	err := c.do(ctx, http.MethodPost, "/fence", req, &res)
	return res, err
}

// Charge charges one period (see Store.Charge). A refusal is a
// *RejectedError; any other error leaves it unknown whether the store
// accepted the charge (fence again at the same epoch to find out).
func (c *Client) Charge(ctx context.Context, req ChargeRequest) (Result, error) {
	var res Result
	err := c.do(ctx, http.MethodPost, "/charge", req, &res)
	return res, err
}

// Audit returns the store's audit report.
func (c *Client) Audit(ctx context.Context) (audit.Report, error) {
	var rep audit.Report
	err := c.do(ctx, http.MethodGet, "/audit", nil, &rep)
	return rep, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the reply: %w", method, path, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: reply is not the expected JSON: %w", method, path, err)
		}
		return nil
	case http.StatusConflict:
		var cb conflictBody
		if err := json.Unmarshal(b, &cb); err != nil {
			return fmt.Errorf("%s %s: 409 with a body that is not the expected JSON: %w", method, path, err)
		}
		re := &RejectedError{Reason: cb.Reason, Fence: cb.Fence, NextPeriod: cb.NextPeriod, Message: cb.Error}
		if r, ok := body.(ChargeRequest); ok {
			re.Shard = r.Shard
		} else if r, ok := body.(FenceRequest); ok {
			re.Shard = r.Shard
		}
		return re
	}
	var eb errorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, eb.Error)
	}
	return fmt.Errorf("%s %s: %s", method, path, resp.Status)
}
