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

/**
 * Where programs the tests need are looked for besides PATH: Debian puts haproxy in /usr/sbin, which a
 * non-root PATH lacks. .ci/install-tools looks in the same places (keep the two lists equal).
 */
const sbinDirectories = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** The path of a command on PATH or in the sbin directories, or null (a test then skips, saying why). */
export function commandPath(name: string): string | null {
  const search = [process.env.PATH ?? '', ...sbinDirectories].filter((p) => p !== '').join(':');
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8', env: { ...process.env, PATH: search } });
  const path = found.status === 0 && typeof found.stdout === 'string' ? found.stdout.trim() : '';
  return path !== '' ? path : null;
}
