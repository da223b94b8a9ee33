package ledgerstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The wire format. Requests are JSON objects with exactly these fields
// (whatever the Content-Type); an unknown or missing field is a 400 that
// names it.
//
//	POST /fence  {"shard": 3, "epoch": 7, "node": "n1"}
//	   200 {"fence": 7, "next_period": 42}
//	POST /charge {"shard": 3, "epoch": 7, "node": "n1", "period": 42}
//	   200 {"fence": 7, "next_period": 43}
//	   409 {"error": "...", "reason": "stale_epoch" | "duplicate" | "gap", "fence": 8, "next_period": 42}
//	   400 {"error": "...names the field..."}
//	GET /audit             the audit.Report of the whole log
//	GET /log?after=N&limit=M  {"attempts": [...]}: the log after Seq N (default limit 10000)
//	GET /healthz           200 "ok"

// FenceRequest is the body of POST /fence.
type FenceRequest struct {
	Shard uint32 `json:"shard"`
	Epoch uint64 `json:"epoch"`
	Node  string `json:"node"`
}

// ChargeRequest is the body of POST /charge.
type ChargeRequest struct {
	Shard  uint32 `json:"shard"`
	Epoch  uint64 `json:"epoch"`
	Node   string `json:"node"`
	Period uint64 `json:"period"`
}

// errorBody is the body of a 400 or 500 reply.
type errorBody struct {
	Error string `json:"error"`
}

// conflictBody is the body of a 409 reply: a refused write.
type conflictBody struct {
	Error      string `json:"error"`
	Reason     Reason `json:"reason"`
	Fence      uint64 `json:"fence"`
	NextPeriod uint64 `json:"next_period"`
}

// maxBody bounds a request body.
const maxBody = 4 << 10

// defaultLogLimit is GET /log's page size when limit is not given.
const defaultLogLimit = 10000

// Handler returns the store's HTTP API.
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fence", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard *uint32 `json:"shard"`
			Epoch *uint64 `json:"epoch"`
			Node  *string `json:"node"`
		}
		if err := decode(w, r, &req); err != nil {
			badRequest(w, err)
			return
		}
		if err := check(req.Shard != nil, req.Epoch, req.Node); err != nil {
			badRequest(w, err)
			return
		}
		reply(w)(s.Fence(*req.Shard, *req.Epoch, *req.Node))
	})
	mux.HandleFunc("POST /charge", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Shard  *uint32 `json:"shard"`
			Epoch  *uint64 `json:"epoch"`
			Node   *string `json:"node"`
			Period *uint64 `json:"period"`
		}
		if err := decode(w, r, &req); err != nil {
			badRequest(w, err)
			return
		}
		if err := check(req.Shard != nil, req.Epoch, req.Node); err != nil {
			badRequest(w, err)
			return
		}
		switch {
		case req.Period == nil:
			badRequest(w, errors.New(`missing field "period"`))
			return
		case *req.Period < 1 || *req.Period > MaxPeriod:
			badRequest(w, fmt.Errorf(`field "period" must be in [1, %d], got %d`, uint64(MaxPeriod), *req.Period))
			return
		}
		reply(w)(s.Charge(*req.Shard, *req.Epoch, *req.Node, *req.Period))
	})
	mux.HandleFunc("GET /audit", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.Audit())
	})
	mux.HandleFunc("GET /log", func(w http.ResponseWriter, r *http.Request) {
		after, limit := uint64(0), defaultLogLimit
		var err error
		if v := r.URL.Query().Get("after"); v != "" {
			if after, err = strconv.ParseUint(v, 10, 64); err != nil {
				badRequest(w, fmt.Errorf("query parameter \"after\" must be a sequence number, got %q", v))
				return
			}
		}
		if v := r.URL.Query().Get("limit"); v != "" {
			if limit, err = strconv.Atoi(v); err != nil || limit < 1 {
				badRequest(w, fmt.Errorf("query parameter \"limit\" must be a positive number, got %q", v))
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"attempts": s.Log(after, limit)})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// decode reads one JSON object into v, refusing unknown fields and
// trailing data, with errors that name the field.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	// The Content-Type is not checked: curl -d sends a form type, and the
	// body must parse as JSON either way.
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return fmt.Errorf("body: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return fmt.Errorf("field %q: want %s, got JSON %s", te.Field, te.Type, te.Value)
		case errors.As(err, &te):
			return fmt.Errorf("body: want a JSON object, got JSON %s", te.Value)
		case errors.As(err, &se):
			return fmt.Errorf("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.Is(err, io.EOF):
			return errors.New("empty body: want a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("malformed JSON: the body ends inside the object")
		}
		// DisallowUnknownFields: `json: unknown field "x"`.
		return errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// check validates the fields both requests share.
func check(hasShard bool, epoch *uint64, node *string) error {
	switch {
	case !hasShard:
		return errors.New(`missing field "shard"`)
	case epoch == nil:
		return errors.New(`missing field "epoch"`)
	case *epoch == 0:
		return errors.New(`field "epoch" must be at least 1: epoch 0 is never granted`)
	case node == nil:
		return errors.New(`missing field "node"`)
	case *node == "" || len(*node) > 64:
		return fmt.Errorf(`field "node" must be 1-64 bytes, got %d`, len(*node))
	}
	return nil
}

// reply writes a store operation's outcome.
func reply(w http.ResponseWriter) func(Result, error) {
	return func(res Result, err error) {
		var re *RejectedError
		switch {
		case errors.As(err, &re):
			writeJSON(w, http.StatusConflict, conflictBody{Error: re.Message, Reason: re.Reason, Fence: re.Fence, NextPeriod: re.NextPeriod})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, errorBody{Error: err.Error()})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	}
}

func badRequest(w http.ResponseWriter, err error) {
	writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
