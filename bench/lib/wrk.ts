import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Optional cross-check of the generator: wrk (C) against the same server with the same connection count. */
export async function runWrk(url: string, connections: number, durationSec: number, threads: number): Promise<number | null> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-wrk-'));
  const script = path.join(dir, 'post.lua');
  writeFileSync(
    script,
    `wrk.method = "POST"\nwrk.body = '{"quantity":1}'\nwrk.headers["Content-Type"] = "application/json"\n` +
      `wrk.headers["Authorization"] = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ3cmsiLCJleHAiOjQxMDI0NDQ4MDB9.${'x'.repeat(43)}"\n` +
      `wrk.headers["Idempotency-Key"] = "wrk-0000000000"\n`,
  );
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile('wrk', [`-t${threads}`, `-c${connections}`, `-d${durationSec}s`, '-s', script, `${url}/v1/skus/hello/reservations`], (error, out) =>
        error ? reject(error) : resolve(out),
      );
    });
    const m = /Requests\/sec:\s*([\d.]+)/.exec(stdout);
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
