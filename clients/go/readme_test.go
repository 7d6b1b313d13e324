package ensemble_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReadmeExample runs every complete program (```go … package main) in README.md as written.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var programs []string
	for _, m := range regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1) {
		if strings.HasPrefix(m[1], "package main") {
			programs = append(programs, m[1])
		}
	}
	if len(programs) == 0 {
		t.Fatal("README has no complete example")
	}
	for i, program := range programs {
		// Inside the module (a directory starting with "_" is ignored by ./...), so the import of
		// the client resolves to this source tree.
		dir, err := os.MkdirTemp(".", "_readme")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "run", "./"+filepath.Base(dir)).CombinedOutput()
		if err != nil {
			t.Fatalf("example %d: %v\n%s", i+1, err, out)
		}
		for _, want := range []string{
			"This is a mock answer from Ensemble. You said: Say hello",
			"stream cost:",
			"completed",
			"bad request: 400 invalid_request",
		} {
			if i == 0 && !strings.Contains(string(out), want) {
				t.Fatalf("example %d output lacks %q:\n%s", i+1, want, out)
			}
		}
	}
}
