# avsidecar: PID 1 of the Avamar backup sidecar container.
#
# Two ways to build the same image (details in examples/nginx/README.md):
#
#   From source, with a Go image (the default target):
#     docker build -t avsidecar .      (BuildKit, the default since Docker 23,
#     podman build -t avsidecar .       for COPY --chmod)
#
#   From a binary built on the host, where no Go image can be pulled
#   (air-gapped sites, this project's CI):
#     CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 -ldflags='-s -w' -o dist/avsidecar ./cmd/avsidecar
#     podman build --target prebuilt -t avsidecar .
#
# Both base images are build arguments, so a site can point them at its own
# mirror or at local images (--build-arg BASE_IMAGE=localhost/debian:bookworm).
#
# This image holds no Avamar client: the RPM is proprietary and versioned per
# site. The site image adds it (examples/nginx/Dockerfile):
#     FROM avsidecar
#     COPY AvamarClient-*.rpm /opt/avamar/

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

# build compiles a static binary: the final image needs no Go and the binary
# does not depend on the base image's glibc.
FROM ${GO_IMAGE} AS build
WORKDIR /src
# GOPROXY: a site's module proxy (Athens, Artifactory...) when
# proxy.golang.org is not reachable; empty means Go's default.
ARG GOPROXY=""
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
# VERSION and REVISION are stamped into `avsidecar version`, /v1/status and
# avsidecar_build_info (the builder gets no .git, so Go cannot stamp the
# revision itself): docker build --build-arg REVISION=$(git rev-parse HEAD).
ARG VERSION=""
ARG REVISION=""
# nethttpomithttp2 leaves net/http's HTTP/2 out: avsidecar serves plain
# HTTP/1.1 and its REST client needs no more. 0.5 MB less binary, and a
# running sidecar's memory is mostly its binary's pages (BENCHMARKS.md).
RUN CGO_ENABLED=0 go build -trimpath -tags nethttpomithttp2 \
        -ldflags="-s -w -X github.com/avsidecar/avsidecar/internal/buildinfo.version=${VERSION} -X github.com/avsidecar/avsidecar/internal/buildinfo.revision=${REVISION}" \
        -o /out/avsidecar ./cmd/avsidecar

# runtime is everything but the binary. The Avamar client's binaries are
# dynamically linked against glibc and its %pre/%post scriptlets and init
# script need /bin/sh, so the base is a small glibc distribution rather than
# scratch or distroless/static. No rpm, no sshd, no init: avsidecar is all
# of them.
FROM ${BASE_IMAGE} AS runtime
# /opt/avamar receives the site's RPM; /usr/local/avamar is the client
# prefix (a PersistentVolume subPath in Kubernetes, so var/ and the
# registration survive restarts); /etc/avsidecar holds the mounted Secrets.
# Group 0 owns the directories the install writes (the prefix and
# /etc/init.d, where the RPM puts its init script) with the owner's rights:
# the layout an arbitrary non-root UID in group 0 (OpenShift's restricted
# policy) needs. The default user stays root, which a backup client that
# reads every file needs (examples/nginx/README.md, "Security").
RUN mkdir -p /opt/avamar /usr/local/avamar/var /etc/init.d /etc/avsidecar/ssh /etc/avsidecar/browse \
    && chgrp -R 0 /usr/local/avamar /etc/init.d \
    && chmod -R g=u /usr/local/avamar /etc/init.d
LABEL org.opencontainers.image.title="avsidecar" \
      org.opencontainers.image.description="PID 1 of the Dell Avamar backup sidecar: installs, registers and supervises the Avamar client; probes, SSH and a file browser" \
      org.opencontainers.image.source="https://github.com/avsidecar/avsidecar"
# The embedded SSH server on an unprivileged port, as examples/nginx has
# it: the sidecar drops NET_BIND_SERVICE, which port 22 would need.
ENV AVSIDECAR_SSH_ADDR=:2222
# 9180: probes, metrics, status and browse. 2222: embedded SSH.
# 28002: avagent's default listen port, where the Avamar server connects.
EXPOSE 9180 2222 28002
# The exec form: avsidecar itself is PID 1 and receives SIGTERM, no shell
# in between. CMD is the subcommand, so `docker run IMAGE version` works.
ENTRYPOINT ["/usr/local/bin/avsidecar"]
CMD ["run"]

# prebuilt takes a binary from the build context (dist/avsidecar) instead of
# compiling it: for hosts with Go but without a reachable Go image.
FROM runtime AS prebuilt
COPY --chmod=0755 dist/avsidecar /usr/local/bin/avsidecar

# The default target (last stage): the binary compiled by the build stage.
FROM runtime AS image
COPY --from=build --chmod=0755 /out/avsidecar /usr/local/bin/avsidecar
