import { startFlashstock } from './app.js';
import { ConfigError } from './config.js';

/** `npm start`: run until SIGTERM/SIGINT, then shut down gracefully and exit 0. */
async function main(): Promise<void> {
  const service = await startFlashstock();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
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
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  const message = error instanceof ConfigError ? error.message : error instanceof Error ? error.stack : String(error);
  process.stderr.write(`flashstock failed to start: ${message}\n`);
  process.exit(1);
});
