# walship node image. Build: docker build -t walship .
# Run with docker-compose.yml (ZooKeeper + two nodes; README, "docker-compose").
#
# Two build steps, so that a change under src/ does not rebuild the ~300
# dependency crates: first the dependencies alone, against stub sources (this
# layer is reused until Cargo.toml or Cargo.lock change), then walship itself.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin walship \
    && rm -rf src target/release/walship* target/release/deps/walship-* \
       target/release/deps/libwalship-* target/release/.fingerprint/walship-*
# zk/: src/soak/procs.rs include_str!s zk/zoo.cfg.template and zk/log4j.properties.
COPY zk ./zk
COPY src ./src
RUN cargo build --release --locked --bin walship

FROM debian:bookworm-slim
# curl: the health check below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/walship --create-home walship
COPY --from=build /src/target/release/walship /usr/local/bin/walship
USER walship
WORKDIR /var/lib/walship
# The node listens on every interface of the container; set WALSHIP_ADVERTISE
# to the host:port the other node reaches it at (compose: the service name).
# WALSHIP_ENDPOINTS: the CLI (walship kv/status) inside the container talks to
# this container's node unless told otherwise.
ENV RUST_LOG=info \
    WALSHIP_DATA_DIR=/var/lib/walship \
    WALSHIP_LISTEN=0.0.0.0:8080 \
    WALSHIP_ENDPOINTS=127.0.0.1:8080
VOLUME ["/var/lib/walship"]
EXPOSE 8080
# The node exits cleanly on SIGTERM (docker stop): a leader hands over first.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
    CMD curl -fsS --max-time 2 http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["walship", "node"]
