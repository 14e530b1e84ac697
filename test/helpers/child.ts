import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { adminToken, jwtSecret } from './service.js';

export interface Child {
  child: ChildProcess;
  url: string;
  /** The metrics listener (METRICS_PORT=0: a free port): `${metricsUrl}/metrics`. */
  metricsUrl: string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Whether it has logged "ready" (recovered) yet. */
  isReady(): boolean;
  /** Its last log lines (stdout), for a failure message. */
  logTail?: () => string[];
}

/**
 * The real entry point (src/main.ts) in its own process, on the given database,
 * handed back once it is ready, or (`until: 'listening'`) as soon as its port
 * is open while recovery still runs.
 */
export async function startChild(
  databaseUrl: string,
  env: Record<string, string> = {},
  until: 'ready' | 'listening' = 'ready',
): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      ADMIN_TOKEN: adminToken,
      JWT_SECRET: jwtSecret,
      PORT: '0',
      METRICS_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    let entry: { msg?: string; url?: string; metricsUrl?: string };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    const ready = entry.msg === 'ready';
    if (entry.url && (ready || (until === 'listening' && /^listening/.test(entry.msg ?? '')))) {
      let readyYet = ready;
      const tail: string[] = [];
      // Keep draining the child's log, watching for "ready", keeping the last lines.
      lines.on('line', (next) => {
        if (/"msg":"ready"/.test(next)) readyYet = true;
        tail.push(next);
        if (tail.length > 200) tail.shift();
      });
      return { child, url: entry.url, metricsUrl: entry.metricsUrl ?? '', exited, isReady: () => readyYet, logTail: () => [...tail] };
    }
  }
  throw new Error(`child exited before it was ${until}`);
}
