#!/usr/bin/env bash
# walship: local stand-ins for the public base images that Dockerfile and the
# compose files name, built from Debian packages. ONLY needed where Docker Hub
# is unreachable (an offline or firewalled build machine); on a normal machine
# `docker-compose up -d --build` pulls the real images and this script is not
# used. The Dockerfile and compose files keep the public names: this script
# tags its images with exactly those names, so the same files work both ways.
#
#   scripts/docker-standins.sh            build the images that are missing
#   scripts/docker-standins.sh --force    rebuild all three
#
#   debian:bookworm-slim  debootstrap --variant=minbase of Debian bookworm,
#                         `docker import`ed, apt sources as in the real image
#                         (deb.debian.org bookworm, -updates, -security).
#   rust:1-bookworm       that image + gcc, libc6-dev, make, pkg-config, git,
#                         curl, and the HOST's Rust toolchain (rustc --print
#                         sysroot: bin, lib, libexec, etc; no docs) under
#                         /usr/local/rustup, cargo and rustc on PATH through
#                         /usr/local/cargo/bin, CARGO_HOME=/usr/local/cargo as in
#                         the real image, and the host's CA bundle (CA_BUNDLE
#                         below). Debian's own rustc (1.63) is too old
#                         for this project's dependencies, so the toolchain is
#                         whatever the host has (no rustup inside the image).
#   zookeeper:3.8         that image + Debian's ZooKeeper 3.8.0 jars
#                         (libzookeeper-java) on openjdk-17-jre-headless, laid
#                         out as the real image: ZOO_* defaults, /conf, /data,
#                         /datalog, /logs, user zookeeper (uid 1000), gosu, and a
#                         /docker-entrypoint.sh that writes zoo.cfg from the same
#                         ZOO_* variables as the real one (ZOO_TICK_TIME,
#                         ZOO_INIT_LIMIT, ZOO_SYNC_LIMIT, ZOO_AUTOPURGE_*,
#                         ZOO_MAX_CLIENT_CNXNS, ZOO_STANDALONE_ENABLED,
#                         ZOO_ADMINSERVER_ENABLED, ZOO_SERVERS, ZOO_MY_ID,
#                         ZOO_4LW_COMMANDS_WHITELIST, ZOO_CFG_EXTRA) and the same
#                         CMD ["zkServer.sh", "start-foreground"], logging to the
#                         console. Differences: ZooKeeper 3.8.0 (Debian) instead of
#                         3.8.x latest, log4j 1.2 instead of logback, Debian
#                         bookworm + OpenJDK 17 instead of Ubuntu + Temurin 17,
#                         and zkServer.sh here knows only start-foreground
#                         (plus zkCli.sh). ZK_ENTRYPOINT=<file> puts another
#                         docker-entrypoint.sh (e.g. the real image's) in place
#                         of this script's.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
# STANDINS_DIR (work dir, default /var/tmp/walship-standins; ~1 GiB while it
# runs), RUST_SYSROOT (default: `rustc --print sysroot`), CA_BUNDLE (the
# rust image's /etc/ssl/certs/ca-certificates.crt, default the host's: cargo
# in the image build then trusts what the host trusts, e.g. a TLS-inspecting
# proxy in front of crates.io).
# Needs root (debootstrap) and a running Docker engine; on Debian:
#   apt-get install docker.io docker-compose debootstrap && dockerd &
set -euo pipefail

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="${STANDINS_DIR:-/var/tmp/walship-standins}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
FORCE=0
case "${1:-}" in
    --force) FORCE=1 ;;
    "") ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

log() { printf '[standins %s] %s\n' "$(date +%T)" "$*"; }
die() { echo "docker-standins.sh: $*" >&2; exit 1; }
have() { [[ $FORCE == 0 ]] && docker image inspect "$1" >/dev/null 2>&1; }

command -v docker >/dev/null || die "docker not found (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (start dockerd)"
mkdir -p "$WORK"

# --- debian:bookworm-slim ---------------------------------------------------
if have debian:bookworm-slim; then
    log "debian:bookworm-slim present"
else
    command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
    [[ $(id -u) == 0 ]] || die "debootstrap needs root"
    rootfs="$WORK/rootfs"
    rm -rf "$rootfs"
    log "debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $WORK/debootstrap.log"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # As the real slim image: no docs or man pages from later installs.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/* "$rootfs"/tmp/*
    log "docker import -> debian:bookworm-slim"
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$rootfs"
fi

# --- rust:1-bookworm --------------------------------------------------------
if have rust:1-bookworm; then
    log "rust:1-bookworm present"
else
    sysroot="${RUST_SYSROOT:-$(rustc --print sysroot 2>/dev/null)}" \
        || die "no host Rust toolchain (rustc --print sysroot); set RUST_SYSROOT"
    [[ -x "$sysroot/bin/cargo" && -x "$sysroot/bin/rustc" ]] || die "$sysroot has no bin/cargo and bin/rustc"
    ctx="$WORK/rust"
    rm -rf "$ctx"
    mkdir -p "$ctx/toolchain"
    log "rust:1-bookworm with the host toolchain $("$sysroot/bin/rustc" --version)"
    for d in bin lib libexec etc; do
        [[ -e "$sysroot/$d" ]] && cp -a "$sysroot/$d" "$ctx/toolchain/"
    done
    # The host's CA bundle, so that cargo inside the build trusts what the
    # host trusts (e.g. a TLS-inspecting proxy in front of crates.io).
    cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git gcc libc6-dev make pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY toolchain /usr/local/rustup/toolchains/stable-x86_64-unknown-linux-gnu
RUN mkdir -p /usr/local/cargo/bin \
    && for b in /usr/local/rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/*; do ln -s "$b" /usr/local/cargo/bin/; done \
    && cargo --version && rustc --version
EOF
    docker build -t rust:1-bookworm "$ctx" >"$WORK/rust.log" 2>&1 || die "building rust:1-bookworm failed; see $WORK/rust.log"
    rm -rf "$ctx"
fi

# --- zookeeper:3.8 ----------------------------------------------------------
if have zookeeper:3.8; then
    log "zookeeper:3.8 present"
else
    ctx="$WORK/zookeeper"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    log "zookeeper:3.8 from Debian's libzookeeper-java"
    if [[ -n "${ZK_ENTRYPOINT:-}" ]]; then
        cp "$ZK_ENTRYPOINT" "$ctx/docker-entrypoint.sh"
    else
        # The real image's entrypoint semantics: chown the dirs and drop to the
        # zookeeper user when started as root with zkServer.sh; write zoo.cfg
        # from ZOO_* only if /conf/zoo.cfg is absent; myid only if absent.
        cat >"$ctx/docker-entrypoint.sh" <<'EOF'
#!/bin/bash
set -e
if [[ "$1" == zkServer.sh && "$(id -u)" == 0 ]]; then
    chown -R zookeeper "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR" "$ZOO_LOG_DIR"
    exec gosu zookeeper "$0" "$@"
fi
cfg="$ZOO_CONF_DIR/zoo.cfg"
if [[ ! -f "$cfg" ]]; then
    {
        echo "dataDir=$ZOO_DATA_DIR"
        echo "dataLogDir=$ZOO_DATA_LOG_DIR"
        echo "tickTime=$ZOO_TICK_TIME"
        echo "initLimit=$ZOO_INIT_LIMIT"
        echo "syncLimit=$ZOO_SYNC_LIMIT"
        echo "autopurge.snapRetainCount=$ZOO_AUTOPURGE_SNAPRETAINCOUNT"
        echo "autopurge.purgeInterval=$ZOO_AUTOPURGE_PURGEINTERVAL"
        echo "maxClientCnxns=$ZOO_MAX_CLIENT_CNXNS"
        echo "standaloneEnabled=$ZOO_STANDALONE_ENABLED"
        echo "admin.enableServer=$ZOO_ADMINSERVER_ENABLED"
        for s in ${ZOO_SERVERS:-server.1=localhost:2888:3888;2181}; do echo "$s"; done
        [[ -z "$ZOO_4LW_COMMANDS_WHITELIST" ]] || echo "4lw.commands.whitelist=$ZOO_4LW_COMMANDS_WHITELIST"
        for e in $ZOO_CFG_EXTRA; do echo "$e"; done
    } >>"$cfg"
fi
[[ -f "$ZOO_DATA_DIR/myid" ]] || echo "${ZOO_MY_ID:-1}" >"$ZOO_DATA_DIR/myid"
exec "$@"
EOF
    fi
    cat >"$ctx/zkServer.sh" <<'EOF'
#!/bin/bash
# Stand-in for ZooKeeper's zkServer.sh: start-foreground only.
set -e
[[ "$1" == start-foreground ]] || { echo "zkServer.sh (stand-in): only start-foreground" >&2; exit 2; }
j=/usr/share/java
exec java ${JVMFLAGS:--Xmx512m} -Dzookeeper.log.dir="$ZOO_LOG_DIR" \
    -Dlog4j.configuration="file:$ZOOCFGDIR/log4j.properties" \
    -cp "$ZOOCFGDIR:$j/zookeeper.jar:$j/zookeeper-jute.jar:$j/slf4j-api.jar:$j/slf4j-log4j12.jar:$j/log4j-1.2.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZOOCFGDIR/zoo.cfg"
EOF
    cat >"$ctx/zkCli.sh" <<'EOF'
#!/bin/bash
j=/usr/share/java
exec java -Dlog4j.configuration="file:$ZOOCFGDIR/log4j.properties" \
    -cp "$ZOOCFGDIR:$j/zookeeper.jar:$j/zookeeper-jute.jar:$j/slf4j-api.jar:$j/slf4j-log4j12.jar:$j/log4j-1.2.jar:$j/commons-cli.jar" \
    org.apache.zookeeper.ZooKeeperMain "$@"
EOF
    cat >"$ctx/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n
EOF
    cat >"$ctx/Dockerfile" <<'EOF'
FROM debian:bookworm-slim
ENV ZOO_CONF_DIR=/conf \
    ZOO_DATA_DIR=/data \
    ZOO_DATA_LOG_DIR=/datalog \
    ZOO_LOG_DIR=/logs \
    ZOO_TICK_TIME=2000 \
    ZOO_INIT_LIMIT=5 \
    ZOO_SYNC_LIMIT=2 \
    ZOO_AUTOPURGE_PURGEINTERVAL=0 \
    ZOO_AUTOPURGE_SNAPRETAINCOUNT=3 \
    ZOO_MAX_CLIENT_CNXNS=60 \
    ZOO_STANDALONE_ENABLED=true \
    ZOO_ADMINSERVER_ENABLED=true
RUN set -eux; \
    groupadd -r zookeeper --gid=1000; \
    useradd -r -g zookeeper --uid=1000 zookeeper; \
    mkdir -p "$ZOO_DATA_LOG_DIR" "$ZOO_DATA_DIR" "$ZOO_CONF_DIR" "$ZOO_LOG_DIR"; \
    chown zookeeper:zookeeper "$ZOO_DATA_LOG_DIR" "$ZOO_DATA_DIR" "$ZOO_CONF_DIR" "$ZOO_LOG_DIR"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless libzookeeper-java libslf4j-java liblog4j1.2-java libcommons-cli-java \
        ca-certificates gosu netcat-openbsd wget; \
    rm -rf /var/lib/apt/lists/*; \
    gosu nobody true; \
    mkdir -p /apache-zookeeper-3.8-bin/bin
COPY zkServer.sh zkCli.sh /apache-zookeeper-3.8-bin/bin/
COPY log4j.properties /conf/
COPY docker-entrypoint.sh /
RUN chmod 755 /docker-entrypoint.sh /apache-zookeeper-3.8-bin/bin/*; chown -R zookeeper:zookeeper /conf
WORKDIR /apache-zookeeper-3.8-bin
VOLUME ["/data", "/datalog", "/logs"]
EXPOSE 2181 2888 3888 8080
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/apache-zookeeper-3.8-bin/bin \
    ZOOCFGDIR=/conf
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["zkServer.sh", "start-foreground"]
EOF
    docker build -t zookeeper:3.8 "$ctx" >"$WORK/zookeeper.log" 2>&1 || die "building zookeeper:3.8 failed; see $WORK/zookeeper.log"
    rm -rf "$ctx"
fi

log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(debian:bookworm-slim|rust:1-bookworm|zookeeper:3.8) ' | tr '\n' ';')"
