import { startFlashstock, type Flashstock } from './app.js';
import { ConfigError } from './config.js';

/** `npm start`: run until SIGTERM/SIGINT, then shut down gracefully and exit 0. */
async function main(): Promise<void> {
  // Handlers first: a signal that arrives while starting must still end in a clean stop.
  let service: Flashstock | null = null;
  let stopRequested: string | null = null;
  const shutdown = (signal: string) => {
    if (stopRequested !== null) return;
    stopRequested = signal;
    if (service !== null) stop(service, signal);
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  service = await startFlashstock();
  if (stopRequested !== null) stop(service, stopRequested);
}

function stop(service: Flashstock, signal: string): void {
  service.log.info({ signal }, 'shutting down: flushing the open batch and answering in-flight requests');
  const deadline = setTimeout(() => {
    service.log.error({ timeoutMs: service.config.shutdownTimeoutMs }, 'shutdown timed out');
    process.exit(1);
  }, service.config.shutdownTimeoutMs);
  deadline.unref();
  service.stop().then(
    () => {
      service.log.info('stopped');
      process.exit(0);
    },
    (err: unknown) => {
      service.log.error({ err }, 'shutdown failed');
      process.exit(1);
    },
  );
}

main().catch((error: unknown) => {
  const message = error instanceof ConfigError ? error.message : error instanceof Error ? error.stack : String(error);
  process.stderr.write(`flashstock failed to start: ${message}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
