import { spawnSync } from 'node:child_process';
import net from 'node:net';

/** A TCP port free on 127.0.0.1 right now (for servers a test starts: Redis, Postgres, Prometheus, haproxy). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The path of a command on PATH, or null (a test then skips loudly). */
export function commandPath(name: string): string | null {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path !== '' ? path : null;
}
