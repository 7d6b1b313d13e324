package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The soak's clients: `-http` SSE streams on /api/v1/stream (one TCP connection each) and `-ws`
// streams multiplexed 100 per WebSocket on /api/v1/ws, started `-rate` per second. Prints a JSON
// status line every 500 ms and a final JSON summary; the Python driver reads them.
type stats struct {
	open, done, errors atomic.Int64
	mu                 sync.Mutex
	durations, gaps    []float64 // per stream: first byte → end, and its longest wait between reads (ms)
}

func (s *stats) fail(format string, a ...any) {
	if s.errors.Add(1) <= 5 {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
	}
}

func (s *stats) finish(first time.Time, maxGap time.Duration) {
	s.done.Add(1)
	s.mu.Lock()
	s.durations = append(s.durations, float64(time.Since(first).Microseconds())/1000)
	s.gaps = append(s.gaps, float64(maxGap.Microseconds())/1000)
	s.mu.Unlock()
}

func runClients(args []string) {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	addr := fs.String("addr", "", "gateway host:port")
	key := fs.String("key", "", "Ensemble API key")
	model := fs.String("model", "soak-model", "model name")
	nHTTP := fs.Int("http", 8000, "SSE streams, one connection each")
	nWS := fs.Int("ws", 2000, "streams multiplexed 100 per WebSocket")
	rate := fs.Float64("rate", 500, "new streams per second")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after")
	path := fs.String("path", "/api/v1/stream", "HTTP streams: the route (an OpenAI route for a bare pass-through)")
	openai := fs.Bool("openai", false, "HTTP streams: send an OpenAI chat request and expect `data: [DONE]`")
	usage := fs.Bool("usage", false, "OpenAI requests: ask for the usage chunk (stream_options.include_usage)")
	_ = fs.Parse(args)

	st := &stats{}
	total := *nHTTP + *nWS
	req := map[string]any{"model": *model, "messages": []map[string]string{{"role": "user", "content": "soak"}}}
	end := eventDone
	if *openai {
		req["stream"] = true
		end = openaiDone
		if *usage {
			req["stream_options"] = map[string]bool{"include_usage": true}
		}
	}
	body, _ := json.Marshal(req)
	request := []byte(fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", *path, *addr, *key, len(body), body))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	t0 := time.Now().Add(200 * time.Millisecond)
	startAt := func(i int) time.Time { return t0.Add(time.Duration(float64(i) / *rate * float64(time.Second))) }
	var wg sync.WaitGroup
	// WebSocket streams start first: a request on a WebSocket is a message its socket's reader takes
	// one per event-loop turn, so on a saturated gateway late ones would trickle in (~14/s for 20
	// sockets at 1.4 s of lag) and the first streams would end before the last began.
	sockets := make([]chan string, (*nWS+99)/100)
	for i := range sockets {
		n := min(100, *nWS-i*100)
		sockets[i] = make(chan string, n)
		wg.Add(1)
		go func(ch chan string, n int) {
			defer wg.Done()
			wsSocket(ctx, *addr, *key, *model, ch, n, st)
		}(sockets[i], n)
	}
	for i := 0; i < total; i++ {
		if i < *nWS {
			go func(i int) {
				time.Sleep(time.Until(startAt(i)))
				sockets[i/100] <- fmt.Sprintf("soak-%d", i)
			}(i)
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			time.Sleep(time.Until(startAt(i)))
			httpStream(ctx, *addr, request, end, st)
		}(i)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	report := func(final bool) {
		line := map[string]any{
			"t": time.Since(start).Seconds(), "open": st.open.Load(), "done": st.done.Load(),
			"errors": st.errors.Load(), "final": final,
		}
		if final {
			st.mu.Lock()
			line["duration_ms"] = percentiles(st.durations)
			line["max_gap_ms"] = percentiles(st.gaps)
			st.mu.Unlock()
			line["timed_out"] = ctx.Err() != nil
		}
		out, _ := json.Marshal(line)
		fmt.Println(string(out))
	}
	for {
		select {
		case <-finished:
			report(true)
			return
		case <-tick.C:
			report(false)
		}
	}
}

func percentiles(xs []float64) map[string]float64 {
	if len(xs) == 0 {
		return map[string]float64{}
	}
	sort.Float64s(xs)
	at := func(q float64) float64 { return xs[min(len(xs)-1, int(q*float64(len(xs))))] }
	return map[string]float64{"p50": at(0.50), "p99": at(0.99), "max": xs[len(xs)-1]}
}

var (
	eventDone  = []byte("event: done")
	openaiDone = []byte("data: [DONE]")
	eventError = []byte("event: error")
	lastChunk  = []byte("0\r\n\r\n")
)

// httpStream reads one streamed answer to its end: the `end` marker, then the last chunk of the body.
func httpStream(ctx context.Context, addr string, request, end []byte, st *stats) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		st.fail("http dial: %v", err)
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if _, err := conn.Write(request); err != nil {
		st.fail("http write: %v", err)
		return
	}
	r := bufio.NewReaderSize(conn, 16384)
	status, err := r.ReadString('\n')
	if err != nil || len(status) < 12 || status[9:12] != "200" {
		st.fail("http status: %q %v", status, err)
		return
	}
	st.open.Add(1)
	defer st.open.Add(-1)
	first, last := time.Now(), time.Now()
	var maxGap time.Duration
	sawDone := false // the done event carries the whole answer, so it may span many reads
	buf := make([]byte, 16384)
	tail := make([]byte, 0, 8192)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			now := time.Now()
			maxGap = max(maxGap, now.Sub(last))
			last = now
			tail = append(tail, buf[:n]...)
			if bytes.Contains(tail, eventError) {
				st.fail("http error event: %s", tail[max(0, len(tail)-300):])
				return
			}
			sawDone = sawDone || bytes.Contains(tail, end)
			if sawDone && bytes.HasSuffix(tail, lastChunk) {
				st.finish(first, maxGap)
				return
			}
			if len(tail) > 4096 {
				tail = append(tail[:0], tail[len(tail)-4096:]...)
			}
		}
		if err != nil {
			st.fail("http read before the end of the stream: %v", err)
			return
		}
	}
}

type wsMessage struct {
	Type      string `json:"type"`
	RequestID string `json:"request_id"`
}

func wsSocket(ctx context.Context, addr, key, model string, ids chan string, n int, st *stats) {
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/api/v1/ws", nil)
	if err != nil {
		st.fail("ws dial: %v", err)
		for i := 1; i < n; i++ {
			st.errors.Add(1)
		}
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 24)
	auth, _ := json.Marshal(map[string]string{"type": "auth", "api_key": key})
	if err := conn.Write(ctx, websocket.MessageText, auth); err != nil {
		st.fail("ws auth: %v", err)
		return
	}
	var m wsMessage
	if _, data, err := conn.Read(ctx); err != nil || json.Unmarshal(data, &m) != nil || m.Type != "ready" {
		st.fail("ws not ready: %v", err)
		return
	}
	go func() {
		for i := 0; i < n; i++ {
			id := <-ids
			msg, _ := json.Marshal(map[string]any{
				"type": "request", "request_id": id, "model": model,
				"messages": []map[string]string{{"role": "user", "content": "soak"}},
			})
			if conn.Write(ctx, websocket.MessageText, msg) != nil {
				return
			}
		}
	}()
	type progress struct {
		first, last time.Time
		maxGap      time.Duration
	}
	streams := map[string]*progress{}
	for remaining := n; remaining > 0; {
		_, data, err := conn.Read(ctx)
		if err != nil {
			st.fail("ws read with %d streams unfinished: %v", remaining, err)
			st.errors.Add(int64(remaining - 1))
			st.open.Add(-int64(len(streams)))
			return
		}
		m = wsMessage{}
		if err := json.Unmarshal(data, &m); err != nil {
			st.fail("ws bad message: %v", err)
			continue
		}
		now := time.Now()
		p := streams[m.RequestID]
		switch m.Type {
		case "block":
			if p == nil {
				streams[m.RequestID] = &progress{first: now, last: now}
				st.open.Add(1)
			} else {
				p.maxGap = max(p.maxGap, now.Sub(p.last))
				p.last = now
			}
		case "done", "error":
			remaining--
			if p != nil {
				delete(streams, m.RequestID)
				st.open.Add(-1)
			}
			if m.Type == "error" {
				st.fail("ws error: %s", data)
			} else if p != nil {
				st.finish(p.first, max(p.maxGap, now.Sub(p.last)))
			} else {
				st.finish(now, 0)
			}
		}
	}
}
