// Package deps pins the design's libraries while the packages that use them are written.
package deps

import (
	_ "github.com/cavaliergopher/cpio"
	_ "github.com/cavaliergopher/rpm"
	_ "github.com/creack/pty"
	_ "github.com/dsnet/compress/bzip2"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gliderlabs/ssh"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/google/rpmpack"
	_ "github.com/hashicorp/go-retryablehttp"
	_ "github.com/kelseyhightower/envconfig"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/pkg/sftp"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/common/expfmt"
	_ "github.com/rs/zerolog"
	_ "github.com/ulikunitz/xz"
	_ "github.com/ulikunitz/xz/lzma"
	_ "golang.org/x/crypto/ssh"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "k8s.io/api/apps/v1"
	_ "sigs.k8s.io/yaml"
)
