package ensemble

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Stream calls POST /api/v1/stream. Errors before the stream starts (auth, validation, routing,
// rate limits) are returned here and retried like Generate; read the blocks with Next:
//
//	s, err := client.Stream(ctx, req)
//	for s.Next() { b := s.Block() … }
//	if err := s.Err(); err != nil { … }
//	resp := s.Response()
func (c *Client) Stream(ctx context.Context, req Request) (*BlockStream, error) {
	x, err := c.send(ctx, http.MethodPost, "/api/v1/stream", streaming(req), req.RequestID, c.timeouts.Stream, true)
	if err != nil {
		return nil, err
	}
	return &BlockStream{x: x, lines: lineScanner(x), requestID: x.resp.Header.Get("x-request-id")}, nil
}

// GenerateStream calls POST /api/v1/generate/stream: only the answer's text. The plain-text route has
// no error frame, so a failure after the stream started just ends the text (use Stream to see it).
func (c *Client) GenerateStream(ctx context.Context, req Request) (*TextStream, error) {
	x, err := c.send(ctx, http.MethodPost, "/api/v1/generate/stream", streaming(req), req.RequestID, c.timeouts.Stream, true)
	if err != nil {
		return nil, err
	}
	return &TextStream{x: x, requestID: x.resp.Header.Get("x-request-id")}, nil
}

func streaming(req Request) any {
	type wire Request
	return struct {
		wire
		Stream bool `json:"stream"`
	}{wire(req), true}
}

// BlockStream yields the EventBlock deltas of one stream, then holds the final response.
type BlockStream struct {
	x         *exchange
	lines     *bufio.Scanner
	requestID string
	block     EventBlock
	response  *InferenceResponse
	err       error
	done      bool
}

// RequestID is the gateway's id of the request (X-Request-ID).
func (s *BlockStream) RequestID() string { return s.requestID }

// Next advances to the next block; false at the end (then check Err and Response).
func (s *BlockStream) Next() bool {
	if s.done {
		return false
	}
	var event string
	var data [][]byte
	for s.lines.Scan() {
		s.x.timer.Reset(s.x.idle)
		line := s.lines.Bytes()
		if len(line) == 0 {
			if len(data) == 0 && event == "" {
				continue
			}
			if s.dispatch(event, bytes.Join(data, []byte("\n"))) {
				return true
			}
			if s.done {
				return false
			}
			event, data = "", nil
			continue
		}
		if line[0] == ':' {
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			event = string(value)
		case "data":
			data = append(data, append([]byte(nil), value...))
		}
	}
	err := s.lines.Err()
	if err == nil {
		err = errors.New("the stream ended without a done event")
	}
	s.finish(s.broken(err))
	return false
}

// dispatch handles one event; true when it produced a block.
func (s *BlockStream) dispatch(event string, data []byte) bool {
	switch event {
	case "block":
		var b EventBlock
		if err := json.Unmarshal(data, &b); err != nil {
			s.finish(&Error{Kind: KindStream, Message: "a block event is not valid JSON", RequestID: s.requestID, Err: err})
			return false
		}
		s.block = b
		return true
	case "done":
		var r InferenceResponse
		if err := json.Unmarshal(data, &r); err != nil {
			s.finish(&Error{Kind: KindStream, Message: "the done event is not valid JSON", RequestID: s.requestID, Err: err})
			return false
		}
		s.response = &r
		s.finish(nil)
	case "error":
		s.finish(streamError(data, s.requestID))
	}
	return false
}

func (s *BlockStream) broken(err error) error {
	if ctxErr := s.x.resp.Request.Context().Err(); ctxErr != nil && !s.x.timedOut.Load() {
		// The caller cancelled: their context's error.
		return ctxErr
	}
	what := "broke"
	if s.x.timedOut.Load() {
		what = "timed out"
	}
	return &Error{Kind: KindStream, Message: fmt.Sprintf("the stream %s after it started", what), RequestID: s.requestID, Err: err}
}

func (s *BlockStream) finish(err error) {
	s.done, s.err = true, err
	s.x.close()
}

// Block is the current block delta.
func (s *BlockStream) Block() EventBlock { return s.block }

// Err is the error that ended the stream, nil after a done event.
func (s *BlockStream) Err() error { return s.err }

// Response is the final InferenceResponse, nil until the done event arrived.
func (s *BlockStream) Response() *InferenceResponse { return s.response }

// Text reads the rest of the stream and returns the text of its text blocks.
func (s *BlockStream) Text() (string, error) {
	var b bytes.Buffer
	for s.Next() {
		if blk := s.Block(); blk.Type == "text" {
			b.WriteString(blk.Text)
		}
	}
	return b.String(), s.Err()
}

// Close stops reading (closes the connection); safe to call more than once. After an early Close,
// Err reports context.Canceled.
func (s *BlockStream) Close() error {
	if !s.done {
		s.finish(context.Canceled)
	}
	return nil
}

// TextStream is the body of /api/v1/generate/stream: an io.ReadCloser of UTF-8 text.
type TextStream struct {
	x         *exchange
	requestID string
	closed    bool
}

// RequestID is the gateway's id of the request (X-Request-ID).
func (t *TextStream) RequestID() string { return t.requestID }

// Read reads answer text as it arrives.
func (t *TextStream) Read(p []byte) (int, error) {
	n, err := t.x.resp.Body.Read(p)
	t.x.timer.Reset(t.x.idle)
	if err != nil && err != io.EOF {
		what := "broke"
		if t.x.timedOut.Load() {
			what = "timed out"
		}
		err = &Error{Kind: KindStream, Message: fmt.Sprintf("the text stream %s after it started", what), RequestID: t.requestID, Err: err}
	}
	return n, err
}

// Close closes the connection.
func (t *TextStream) Close() error {
	if !t.closed {
		t.closed = true
		t.x.close()
	}
	return nil
}

// lineScanner splits SSE lines on \n, \r\n or \r.
func lineScanner(x *exchange) *bufio.Scanner {
	sc := bufio.NewScanner(x.resp.Body)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			if data[i] == '\n' {
				return i + 1, data[:i], nil
			}
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // a lone \r at the end may be half of \r\n
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	return sc
}
