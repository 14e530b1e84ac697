import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Servers under test run in their own processes, so they never share an event
 * loop (or a CPU's worth of JIT and GC) with the load generator.
 */

export interface ChildServer {
  child: ChildProcess;
  /** The JSON object the child printed once ready (port, url, tokens...). */
  info: Record<string, unknown>;
  /** Bytes allocated on the process's V8 heaps since it started, every thread summed (bench/lib/alloc-probe.cjs); null if it did not answer. */
  allocated(): Promise<number | null>;
  stop(): Promise<void>;
}

const tsxImport = ['--import', 'tsx'];
const allocProbe = path.join(path.dirname(fileURLToPath(import.meta.url)), 'alloc-probe.cjs');
/** How long the bench waits for a server's allocation figure (it answers in ~150 ms). */
const allocAnswerTimeoutMs = 3_000;

/** Signals the child's alloc probe and waits for the figure it writes (a newer `seq` than the last). */
async function askAllocated(child: ChildProcess, file: string): Promise<number | null> {
  const read = (): { seq: number; bytes: number } | null => {
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as { seq: number; bytes: number };
    } catch {
      return null;
    }
  };
  const before = read()?.seq ?? 0;
  if (child.exitCode !== null || child.signalCode !== null || !child.kill('SIGUSR2')) return null;
  const deadline = Date.now() + allocAnswerTimeoutMs;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    const now = read();
    if (now !== null && now.seq > before) return now.bytes;
  }
  return null;
}

/**
 * Starts `node --import tsx <file>` and waits for a JSON line with `"ready": true`
 * on its stdout. Other stdout lines and stderr are passed through (prefixed) when
 * `verbose`, and kept for the error message otherwise.
 */
export function startChild(
  file: string,
  options: { env?: Record<string, string | undefined>; label: string; timeoutMs?: number; verbose?: boolean; nodeArgs?: string[] },
): Promise<ChildServer> {
  const allocDir = mkdtempSync(path.join(os.tmpdir(), 'flashstock-bench-alloc-'));
  const allocFile = path.join(allocDir, 'allocated.json');
  const child = spawn(process.execPath, [...tsxImport, '--require', allocProbe, ...(options.nodeArgs ?? []), file], {
    env: { ...process.env, ...options.env, BENCH_ALLOC_FILE: allocFile },
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
  void exited.then(() => rmSync(allocDir, { recursive: true, force: true }));
  const allocated = (): Promise<number | null> => askAllocated(child, allocFile);

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
            resolve({ child, info, allocated, stop });
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
