// Command rig is the load side of benches/soak/soak.py: a slow-streaming fake OpenAI upstream
// (`rig fake`) and the stream clients (`rig clients`), in Go so that 100,000 timed events/s cost
// the rig a fraction of a core and leave the machine to the gateway under test.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rig fake|clients [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "fake":
		runFake(os.Args[2:])
	case "clients":
		runClients(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q (want fake or clients)\n", os.Args[1])
		os.Exit(2)
	}
}
