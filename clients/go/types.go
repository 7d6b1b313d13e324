package ensemble

import "encoding/json"

// Message is one conversation turn. Content is a string or a []ContentPart.
type Message struct {
	Role       string     `json:"role"` // system | user | assistant | tool
	Content    any        `json:"content"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

// ContentPart is a text, image, document or audio part of a message.
type ContentPart struct {
	Type   string       `json:"type"`
	Text   string       `json:"text,omitempty"`
	Source *MediaSource `json:"source,omitempty"`
}

// MediaSource is base64 data or a URL.
type MediaSource struct {
	Type      string `json:"type"` // base64 | url
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

// User is a user message with text content.
func User(text string) Message { return Message{Role: "user", Content: text} }

// System is a system message.
func System(text string) Message { return Message{Role: "system", Content: text} }

// Tool describes a function the model may call; Parameters is a JSON Schema.
type Tool struct {
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Parameters  map[string]any `json:"parameters,omitempty"`
	Strict      *bool          `json:"strict,omitempty"`
}

// Request is a native inference request. Zero values are left out (Temperature and TopP are
// pointers because 0 is a meaningful value for them).
type Request struct {
	Model          string         `json:"model"`
	Messages       []Message      `json:"messages"`
	MaxTokens      int            `json:"max_tokens,omitempty"`
	Temperature    *float64       `json:"temperature,omitempty"`
	TopP           *float64       `json:"top_p,omitempty"`
	StopSequences  []string       `json:"stop_sequences,omitempty"`
	Tools          []Tool         `json:"tools,omitempty"`
	ToolChoice     any            `json:"tool_choice,omitempty"` // "auto" | "none" | "required" | {"name": …}
	SessionID      string         `json:"session_id,omitempty"`
	ProviderConfig map[string]any `json:"provider_config,omitempty"`
	// RequestID is sent as X-Request-ID (the key for GetStatus/Retrieve); not part of the body.
	RequestID string `json:"-"`
}

// Float is a helper for Request.Temperature and Request.TopP.
func Float(v float64) *float64 { return &v }

// ToolCall is a call the model made. In a stream delta the first piece carries ID and Name, later
// pieces only more RawArguments.
type ToolCall struct {
	ID           string         `json:"id,omitempty"`
	Name         string         `json:"name,omitempty"`
	Arguments    map[string]any `json:"arguments,omitempty"`
	RawArguments string         `json:"raw_arguments,omitempty"`
}

// EventBlock is a whole block of an answer or, in a stream, a delta of block Index.
// Type is text, tool_call, thinking, redacted_thinking, server_tool or error.
type EventBlock struct {
	Type      string           `json:"type"`
	Index     *int             `json:"index,omitempty"`
	Text      string           `json:"text,omitempty"`
	Citations []map[string]any `json:"citations,omitempty"` // the provider's sources for Text
	ToolCall  *ToolCall        `json:"tool_call,omitempty"`
	Thinking  string           `json:"thinking,omitempty"`
	Signature string           `json:"signature,omitempty"`
	Data      string           `json:"data,omitempty"`  // redacted_thinking: send back unchanged
	Block     map[string]any   `json:"block,omitempty"` // server_tool: the provider's block verbatim
	Error     string           `json:"error,omitempty"`
}

// Usage counts tokens by kind.
type Usage struct {
	InputTokens         int `json:"inputTokens"`
	OutputTokens        int `json:"outputTokens"`
	CachedTokens        int `json:"cachedTokens"`
	CacheCreationTokens int `json:"cacheCreationTokens"`
	ReasoningTokens     int `json:"reasoningTokens"`
}

// InferenceResponse is a whole, priced answer.
type InferenceResponse struct {
	ID                  string       `json:"id"`
	Model               string       `json:"model"`
	Provider            string       `json:"provider"`
	EndpointID          string       `json:"endpoint_id"`
	Blocks              []EventBlock `json:"blocks"`
	Content             string       `json:"content"`
	FinishReason        string       `json:"finish_reason"`
	InputTokens         int          `json:"input_tokens"`
	OutputTokens        int          `json:"output_tokens"`
	CachedPromptTokens  int          `json:"cached_prompt_tokens"`
	CacheCreationTokens int          `json:"cache_creation_tokens"`
	ReasoningTokens     int          `json:"reasoning_tokens"`
	Cost                json.Number  `json:"cost"` // USD, an exact decimal string
	CostMicroDollars    int64        `json:"cost_micro_dollars"`
	Usage               Usage        `json:"usage"`
	ProcessingTimeMs    float64      `json:"processing_time_ms"`
	Performance         struct {
		TTFTMs     float64 `json:"ttft_ms"`
		UpstreamMs float64 `json:"upstream_ms"`
		OverheadMs float64 `json:"overhead_ms"`
	} `json:"performance"`
	RateLimit *struct {
		LimitRequests     int `json:"limit_requests"`
		RemainingRequests int `json:"remaining_requests"`
		LimitTokens       int `json:"limit_tokens"`
		RemainingTokens   int `json:"remaining_tokens"`
	} `json:"rate_limit,omitempty"`
}

// ToolCalls returns the answer's tool calls.
func (r *InferenceResponse) ToolCalls() []ToolCall {
	var calls []ToolCall
	for _, b := range r.Blocks {
		if b.Type == "tool_call" && b.ToolCall != nil {
			calls = append(calls, *b.ToolCall)
		}
	}
	return calls
}

// RequestStatus is the state of a request made with this key.
type RequestStatus struct {
	RequestID   string  `json:"request_id"`
	Status      string  `json:"status"` // pending | streaming | completed | failed
	CreatedAt   *string `json:"created_at"`
	CompletedAt *string `json:"completed_at"`
	Model       *string `json:"model"`
	Provider    *string `json:"provider"`
}

// Model is a model the gateway serves.
type Model struct {
	ID              string             `json:"id"`
	Provider        string             `json:"provider"`
	Providers       []string           `json:"providers"`
	ContextWindow   int                `json:"context_window"`
	MaxOutputTokens int                `json:"max_output_tokens"`
	Pricing         map[string]float64 `json:"pricing"`
	Capabilities    struct {
		Streaming bool `json:"streaming"`
		Tools     bool `json:"tools"`
		Thinking  bool `json:"thinking"`
		Vision    bool `json:"vision"`
	} `json:"capabilities"`
}

// Health is the gateway's health report.
type Health struct {
	Status    string            `json:"status"`
	Version   string            `json:"version"`
	Uptime    float64           `json:"uptime"`
	Providers map[string]string `json:"providers"`
}
