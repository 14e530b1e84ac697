import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout (or `destination`). Errors go through `serializeError`:
 * small lines whatever the error drags along.
 */
export function createLogger(level: string, name = 'flashstock', destination?: DestinationStream): Logger {
  const options = {
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: { err: serializeError, error: serializeError },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}

/** Bounds of one serialized error: how deep the cause chain, how many stack frames, how long a field. */
export const errorLimits = { causeDepth: 3, stackFrames: 8, fieldChars: 300, aggregated: 3 } as const;

/**
 * Only what explains an error: name, message, code, the PostgreSQL fields
 * (severity, detail, hint, …), a few stack frames, and its cause chain, each
 * bounded. Never the objects libraries attach (pg's `client`, sockets, pools,
 * `_events`), which made one line about a dropped connection 3 KB.
 */
export function serializeError(error: unknown, depth = 0): unknown {
  if (!(error instanceof Error)) {
    if (error === null || typeof error !== 'object') return error;
    return { message: clip(safeString((error as { message?: unknown }).message ?? '[non-Error object]')) };
  }
  const out: Record<string, unknown> = { type: error.name, message: clip(error.message) };
  const record = error as unknown as Record<string, unknown>;
  for (const key of errorFields) {
    const value = record[key];
    if (typeof value === 'string') out[key] = clip(value);
    else if (typeof value === 'number' || typeof value === 'boolean') out[key] = value;
  }
  if (typeof error.stack === 'string') out.stack = trimStack(error.stack);
  if (error.cause !== undefined) {
    out.cause = depth < errorLimits.causeDepth ? serializeError(error.cause, depth + 1) : '[cause chain truncated]';
  }
  if (error instanceof AggregateError && depth < errorLimits.causeDepth) {
    out.errors = error.errors.slice(0, errorLimits.aggregated).map((e: unknown) => serializeError(e, depth + 1));
  }
  return out;
}

/** Own fields worth keeping: Node system errors, PostgreSQL errors (pg's DatabaseError), HTTP-ish errors. */
const errorFields = [
  'code', 'errno', 'syscall', 'address', 'port', 'path',
  'severity', 'detail', 'hint', 'position', 'where', 'schema', 'table', 'column', 'constraint', 'routine',
  'status', 'statusCode', 'retryAfterMs',
] as const;

function trimStack(stack: string): string {
  const lines = stack.split('\n');
  const frames = lines.filter((line) => line.trimStart().startsWith('at '));
  const kept = frames.slice(0, errorLimits.stackFrames).map((line) => clip(line.trim()));
  if (frames.length > kept.length) kept.push(`… ${frames.length - kept.length} more frames`);
  return kept.join('\n');
}

function clip(text: string): string {
  return text.length <= errorLimits.fieldChars ? text : `${text.slice(0, errorLimits.fieldChars)}…`;
}

function safeString(value: unknown): string {
  return typeof value === 'string' ? value : String(value);
}
