import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs on stdout; errors carry their cause through pino's `err` serializer. */
export function createLogger(level: string, name = 'flashstock'): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: { err: pino.stdSerializers.errWithCause },
  });
}
