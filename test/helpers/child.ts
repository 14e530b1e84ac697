import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { adminToken, jwtSecret } from './service.js';

export interface Child {
  child: ChildProcess;
  url: string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

/** The real entry point (src/main.ts) in its own process, on the given database. */
export async function startChild(databaseUrl: string, env: Record<string, string> = {}): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      ADMIN_TOKEN: adminToken,
      JWT_SECRET: jwtSecret,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    let entry: { msg?: string; url?: string };
    try {
      entry = JSON.parse(line) as { msg?: string; url?: string };
    } catch {
      continue;
    }
    if (entry.msg === 'ready' && entry.url) {
      lines.on('line', () => undefined); // keep draining the child's log
      return { child, url: entry.url, exited };
    }
  }
  throw new Error('child exited before it was ready');
}
