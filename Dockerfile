# stream-conductor: the daemon (PID 1) supervising nginx in managed mode.
#   docker build -t stream-conductor .
#   docker run -p 8080:8080 -p 9000-9009:9000-9009 -v sc-data:/var/lib/stream-conductor \
#     -e API_TOKEN=... -e BIND_ADDRESS=0.0.0.0 stream-conductor
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/stream-conductor ./cmd/stream-conductor \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/sc-echo ./cmd/sc-echo

# A small echo backend for the compose demo.
FROM debian:bookworm-slim AS echo
COPY --from=build /out/sc-echo /usr/bin/sc-echo
USER nobody
ENTRYPOINT ["/usr/bin/sc-echo", "-listen", "0.0.0.0:2000"]

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libnginx-mod-stream \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
COPY --from=build /out/stream-conductor /usr/bin/stream-conductor
ENV DATA_DIR=/var/lib/stream-conductor \
    PORT_RANGE=9000-9009 \
    BIND_PORT=8080 \
    LOG_FORMAT=json
VOLUME /var/lib/stream-conductor
EXPOSE 8080 9000-9009
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/usr/bin/stream-conductor", "healthz"]
# SIGTERM: the API drains, the store closes cleanly; nginx is stopped with
# the container.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/stream-conductor"]
