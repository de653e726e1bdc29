# syntax=docker/dockerfile:1
# Charter's container image: `charter serve` on port 8080 as uid 10001.
#
#   docker build -t ghcr.io/charter/charter:0.1.0 .
#   docker run --rm -p 8080:8080 -e CHARTER_LISTEN=0.0.0.0:8080 \
#     -e CHARTER_DATABASE_URL=postgres://... -v "$PWD/keys:/etc/charter/keys:ro" \
#     -e CHARTER_KEYS_DIR=/etc/charter/keys --read-only --tmpfs /tmp ghcr.io/charter/charter:0.1.0
#
# The builder and the runtime are both Debian 12 (bookworm), so the binary's
# glibc matches the runtime's.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin charter \
    && install -D -m 0755 target/release/charter /out/charter

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="charter" \
      org.opencontainers.image.description="Charter license issuer" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: TLS to PostgreSQL and to instances that use the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 charter \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/charter --create-home \
       --shell /usr/sbin/nologin charter
COPY --from=builder /out/charter /usr/local/bin/charter
USER 10001:10001
WORKDIR /var/lib/charter
ENV CHARTER_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["charter"]
CMD ["serve"]
