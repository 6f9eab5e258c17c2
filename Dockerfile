# Multi-stage build of the four mlwatch services and the simulated serving
# platform (one image, five binaries).
# docker build -t mlwatch .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      --bin mlwatch-collector --bin mlwatch-analyzer --bin mlwatch-alerter --bin mlwatch-remediator \
      --bin mlwatch-sim \
 && mkdir /out \
 && cp target/release/mlwatch-collector target/release/mlwatch-analyzer \
       target/release/mlwatch-alerter target/release/mlwatch-remediator target/release/mlwatch-sim /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mlwatch \
 && mkdir -p /var/lib/mlwatch && chown mlwatch /var/lib/mlwatch
COPY --from=build /out/ /usr/local/bin/
USER mlwatch
# Each service listens on 0.0.0.0 inside the container; see docker-compose.yml.
CMD ["mlwatch-collector"]
