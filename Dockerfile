# Multi-stage build of the four mlwatch services, the simulated serving
# platform and the tools (one image, seven binaries): mlwatch-profile builds
# drift reference profiles, mlwatch-replay replays event files.
# docker build -t mlwatch .
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      --bin mlwatch-collector --bin mlwatch-analyzer --bin mlwatch-alerter --bin mlwatch-remediator \
      --bin mlwatch-sim --bin mlwatch-profile --bin mlwatch-replay \
 && mkdir /out \
 && cp target/release/mlwatch-collector target/release/mlwatch-analyzer \
       target/release/mlwatch-alerter target/release/mlwatch-remediator target/release/mlwatch-sim \
       target/release/mlwatch-profile target/release/mlwatch-replay /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 mlwatch \
 && mkdir -p /var/lib/mlwatch && chown mlwatch /var/lib/mlwatch
COPY --from=build /out/ /usr/local/bin/
USER mlwatch
# Each service listens on 0.0.0.0 inside the container; see docker-compose.yml.
CMD ["mlwatch-collector"]
