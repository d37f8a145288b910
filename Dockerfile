# walship node image. Build: docker build -t walship .
# Run with docker-compose.yml (ZooKeeper + two nodes).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
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
ENV RUST_LOG=info \
    WALSHIP_DATA_DIR=/var/lib/walship \
    WALSHIP_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/walship"]
EXPOSE 8080
# The node exits cleanly on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
    CMD curl -fsS --max-time 2 http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["walship", "node"]
