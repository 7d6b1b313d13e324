module github.com/ensemble-gateway/ensemble/benches/soak/rig

go 1.23

require github.com/coder/websocket v1.8.15 // indirect
