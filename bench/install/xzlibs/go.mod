module github.com/avsidecar/avsidecar/bench/install/xzlibs

go 1.26.8

require (
	github.com/cavaliergopher/rpm v1.2.0
	github.com/therootcompany/xz v1.0.1
	github.com/ulikunitz/xz v0.5.17
)

require golang.org/x/crypto v0.58.0 // indirect
