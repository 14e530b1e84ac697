import { EventEmitter } from 'node:events';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface ProcessTraps {
  /** Everything caught so far, as `kind: message` lines (empty when all is well). */
  seen(): string[];
}

/**
 * Process-level traps for fault tests that run the service in process: an
 * unhandled rejection, an uncaught exception, or an 'error' event emitted with
 * no listener (which Node turns into an uncaught exception, i.e. a dead
 * service) is recorded instead of ending the test run, so a test can assert
 * there was none. Removed at teardown. Install it once start-up is done: it
 * catches everything, so a failed start would otherwise hang the file.
 */
export function installProcessTraps(t: Teardown): ProcessTraps {
  const caught: string[] = [];
  const describe = (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  const onRejection = (reason: unknown) => caught.push(`unhandledRejection: ${describe(reason)}`);
  const onException = (error: unknown) => caught.push(`uncaughtException: ${describe(error)}`);
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  const emit = EventEmitter.prototype.emit;
  EventEmitter.prototype.emit = function (this: EventEmitter, type: string | symbol, ...args: unknown[]): boolean {
    if (type === 'error' && this.listenerCount('error') === 0) {
      caught.push(`unhandled 'error' event on ${this.constructor.name}: ${describe(args[0])}`);
    }
    return emit.call(this, type, ...args);
  };
  t.teardown(() => {
    process.removeListener('unhandledRejection', onRejection);
    process.removeListener('uncaughtException', onException);
    EventEmitter.prototype.emit = emit;
  });
  return { seen: () => [...caught] };
}
