import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * Servers under test run in their own processes, so they never share an event
 * loop (or a CPU's worth of JIT and GC) with the load generator.
 */

export interface ChildServer {
  child: ChildProcess;
  /** The JSON object the child printed once ready (port, url, tokens...). */
  info: Record<string, unknown>;
  stop(): Promise<void>;
}

const tsxImport = ['--import', 'tsx'];

/**
 * Starts `node --import tsx <file>` and waits for a JSON line with `"ready": true`
 * on its stdout. Other stdout lines and stderr are passed through (prefixed) when
 * `verbose`, and kept for the error message otherwise.
 */
export function startChild(
  file: string,
  options: { env?: Record<string, string | undefined>; label: string; timeoutMs?: number; verbose?: boolean; nodeArgs?: string[] },
): Promise<ChildServer> {
  const child = spawn(process.execPath, [...tsxImport, ...(options.nodeArgs ?? []), file], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const keep = (line: string): void => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
    if (options.verbose) process.stderr.write(`[${options.label}] ${line}\n`);
  };
  createInterface({ input: child.stderr! }).on('line', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };

  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`${options.label} did not become ready within ${options.timeoutMs ?? 120_000} ms\n${tail.join('\n')}`));
    }, options.timeoutMs ?? 120_000);
    let ready = false;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (!ready && line.startsWith('{')) {
        try {
          const info = JSON.parse(line) as Record<string, unknown>;
          if (info.ready === true) {
            ready = true;
            clearTimeout(timer);
            resolve({ child, info, stop });
            return;
          }
        } catch {
          // not ours
        }
      }
      keep(line);
    });
    void exited.then((code) => {
      if (ready) return;
      clearTimeout(timer);
      reject(new Error(`${options.label} exited with ${code} before it was ready\n${tail.join('\n')}`));
    });
  });
}
