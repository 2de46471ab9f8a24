module github.com/streamconductor/stream-conductor

go 1.26

require (
	github.com/fsnotify/fsnotify v1.10.1
	github.com/gorilla/mux v1.8.1
	github.com/rs/zerolog v1.35.1
	go.etcd.io/bbolt v1.5.0
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
