# walship node image. Build: docker build -t walship .
# Run with docker-compose.yml (ZooKeeper + two nodes; README, "docker-compose").
#
# Two build steps, so that a change under src/ does not rebuild the ~300
# dependency crates: first the dependencies alone, against stub sources (this
# layer is reused until Cargo.toml or Cargo.lock change), then walship itself.

FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace's manifests (cargo needs every member's), stub sources for
# each, and the dependencies of walship and walship-soak built against them.
COPY Cargo.toml Cargo.lock ./
COPY crates/types/Cargo.toml crates/types/
COPY crates/storage/Cargo.toml crates/storage/
COPY crates/witness/Cargo.toml crates/witness/
COPY crates/zk/Cargo.toml crates/zk/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY tools/soak/Cargo.toml tools/soak/
COPY tools/bench/Cargo.toml tools/bench/
RUN for d in . crates/types crates/storage crates/witness crates/zk crates/testkit tools/soak tools/bench; do \
        mkdir -p $d/src && touch $d/src/lib.rs && echo 'fn main() {}' > $d/src/main.rs; \
    done \
    && cargo build --release --locked -p walship -p walship-soak \
    && rm -rf src crates/types/src crates/storage/src crates/witness/src crates/zk/src crates/testkit/src tools/soak/src \
       target/release/walship* target/release/deps/*walship* target/release/.fingerprint/walship-*
# zk/: crates/testkit/src/zk.rs include_str!s zk/zoo.cfg.template and
# zk/log4j.properties. tools/bench keeps its stub sources: it is not built.
COPY zk ./zk
COPY src ./src
COPY crates/types/src ./crates/types/src
COPY crates/storage/src ./crates/storage/src
COPY crates/witness/src ./crates/witness/src
COPY crates/zk/src ./crates/zk/src
COPY crates/testkit/src ./crates/testkit/src
COPY tools/soak/src ./tools/soak/src
RUN cargo build --release --locked -p walship -p walship-soak

FROM debian:bookworm-slim
# curl: the health check below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/walship --create-home walship
# walship-soak beside walship: `walship soak` runs it (the soak service in
# docker-compose.yml).
COPY --from=build /src/target/release/walship /src/target/release/walship-soak /usr/local/bin/
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
