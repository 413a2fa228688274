# syntax=docker/dockerfile:1
# The headless server only (`-p multichat-server`): the desktop crate and its WebKitGTK never enter the image.
# Configuration comes from the environment alone (see .env.example and README.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p multichat-server \
    && cp target/release/multichat-server /usr/local/bin/multichat-server

# glibc only: test.sh checks that the binary needs no other shared library.
FROM debian:bookworm-slim
RUN useradd --system --user-group --uid 10001 --home-dir /data --create-home multichat
COPY --from=build /usr/local/bin/multichat-server /usr/local/bin/multichat-server
USER multichat
ENV MULTICHAT_BIND=0.0.0.0:8000 \
    MULTICHAT_DATA_DIR=/data
# The embedded SQLite database, when DATABASE_URL does not name another.
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["multichat-server", "healthcheck"]
# SIGTERM: /readyz turns 503, sockets close with 1001, the process exits 0.
STOPSIGNAL SIGTERM
CMD ["multichat-server", "serve"]
