/**
 * Redis for tests: REDIS_URL when set, else a throwaway `redis-server` on a
 * free port when one is on PATH; null (and the caller skips, loudly) otherwise.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort, commandPath } from './net.js';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface TestRedis {
  url: string;
  /** Stop the server (an outage). Only for a server this helper started. */
  stop(): Promise<void>;
  /** Start it again on the same port. */
  start(): Promise<void>;
  /** Whether stop/start work (false for an external REDIS_URL). */
  controllable: boolean;
}

export function redisServerPath(): string | null {
  return commandPath('redis-server');
}


/** A redis-server this process owns, on a free port, without persistence. */
export async function spawnRedis(t: Teardown): Promise<TestRedis | null> {
  const binary = redisServerPath();
  if (binary === null) return null;
  const port = await freePort();
  let child: ChildProcess | null = null;
  const start = async () => {
    const proc = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      let output = '';
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${output.slice(-500)}`)));
    });
  };
  const stop = async () => {
    const proc = child;
    if (proc === null || proc.exitCode !== null) return;
    child = null;
    await new Promise<void>((resolve) => {
      proc.once('exit', () => resolve());
      proc.kill('SIGKILL');
    });
  };
  await start();
  t.teardown(stop);
  return { url: `redis://127.0.0.1:${port}`, stop, start, controllable: true };
}

export async function testRedis(t: Teardown): Promise<TestRedis | null> {
  const url = process.env.REDIS_URL;
  if (url) {
    const unsupported = () => Promise.reject(new Error('cannot stop an external REDIS_URL'));
    return { url, stop: unsupported, start: unsupported, controllable: false };
  }
  return spawnRedis(t);
}
