# Build: docker build -t eliop2p .
# Run:   docker run --network host -e ELIOP2P_ORIGIN_ENDPOINT=... eliop2p node
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p eliop2p && strip target/release/eliop2p

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/eliop2p eliop2p \
 && install -d -o eliop2p /var/cache/eliop2p /var/lib/eliop2p
COPY --from=build /src/target/release/eliop2p /usr/local/bin/eliop2p
USER eliop2p
# 8080 S3 proxy, 9000 P2P, 9091 admin (metrics, dashboard), 8081 control plane
EXPOSE 8080 9000 9091 8081
ENTRYPOINT ["/usr/local/bin/eliop2p"]
CMD ["node"]
