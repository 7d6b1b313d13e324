package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The soak's upstream: an OpenAI chat-completions endpoint that streams `chunks` tokens `gap`
// apart, in the same chunk shape as Ensemble's Python fake upstream (role chunk, one chunk per
// token, finish chunk, usage chunk when asked, `data: [DONE]`). It exists because the Python fake
// cannot emit 100,000 timed events/s on this machine while the gateway under test shares it.
func runFake(args []string) {
	fs := flag.NewFlagSet("fake", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	chunks := fs.Int("chunks", 100, "tokens per answer")
	gap := fs.Duration("gap", 100*time.Millisecond, "gap between tokens")
	_ = fs.Parse(args)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{prefix...}", func(w http.ResponseWriter, r *http.Request) {
		serveChat(w, r, *chunks, *gap)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	log.Fatal(srv.Serve(ln))
}

type chatRequest struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func serveChat(w http.ResponseWriter, r *http.Request, chunks int, gap time.Duration) {
	body, err := io.ReadAll(r.Body)
	var req chatRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || !req.Stream || req.Model == "" {
		http.Error(w, `{"error":{"message":"the soak fake only streams","type":"invalid_request_error"}}`, 400)
		return
	}
	flusher := w.(http.Flusher)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(200)

	id := "chatcmpl-soak" + strconv.FormatInt(time.Now().UnixNano(), 36)
	created := strconv.FormatInt(time.Now().Unix(), 10)
	model, _ := json.Marshal(req.Model)
	usage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	extra := ""
	if usage {
		extra = `,"usage":null`
	}
	head := `data: {"id":"` + id + `","object":"chat.completion.chunk","created":` + created +
		`,"model":` + string(model) + `,"service_tier":"default","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":`
	send := func(delta, finish string) bool {
		_, err := io.WriteString(w, head+delta+`,"logprobs":null,"finish_reason":`+finish+`}]`+extra+"}\n\n")
		flusher.Flush()
		return err == nil
	}
	tick := time.NewTicker(gap)
	defer tick.Stop()
	if !send(`{"role":"assistant","content":"","refusal":null}`, "null") {
		return
	}
	for i := 0; i < chunks; i++ {
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		}
		word := "tok" + strconv.Itoa(i%10) + " "
		if !send(`{"content":"`+word+`"}`, "null") {
			return
		}
	}
	if !send(`{}`, `"stop"`) {
		return
	}
	if usage {
		u := fmt.Sprintf(`{"prompt_tokens":8,"completion_tokens":%d,"total_tokens":%d,`+
			`"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},`+
			`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,`+
			`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`, chunks, chunks+8)
		_, _ = io.WriteString(w, `data: {"id":"`+id+`","object":"chat.completion.chunk","created":`+created+
			`,"model":`+string(model)+`,"service_tier":"default","system_fingerprint":"fp_fake","choices":[],"usage":`+u+"}\n\n")
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}
