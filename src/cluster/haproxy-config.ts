/**
 * deploy/haproxy/haproxy.cfg is written for deploy/compose (servers by service
 * name, Docker's DNS). `npm run cluster` renders it for local nodes: binds on
 * 127.0.0.1, one `server` line per local port, no resolvers. Pure, so a test
 * can run the result through `haproxy -c`. `adminPort`: the admin frontend
 * (/v1/admin only; default statsPort + 1).
 */
export function renderLocalHaproxyConfig(
  template: string,
  port: number,
  statsPort: number,
  nodePorts: readonly number[],
  adminPort = statsPort + 1,
): string {
  const servers = nodePorts.map((p, i) => `    server node${i + 1} 127.0.0.1:${p} check`).join('\n');
  const rendered = template
    .replace(/^ {4}bind :8080$/m, `    bind 127.0.0.1:${port}`)
    .replace(/^ {4}bind :8404$/m, `    bind 127.0.0.1:${statsPort}`)
    .replace(/^ {4}bind :8081$/m, `    bind 127.0.0.1:${adminPort}`)
    .replace(/ resolvers docker init-addr libc,none/, '')
    .replace(/^# Docker's DNS.*\nresolvers docker\n(?: {4}.*\n)+\n/m, '')
    .replace(/^ {4}# compose service names.*\n(?: {4}server .*\n)+/m, `${servers}\n`)
    .replace(/^ {4}log stdout format raw local0 info$/m, '    log stderr format raw local0 warning');
  if (rendered.includes('resolvers docker') || !rendered.includes(`127.0.0.1:${nodePorts[0]}`) || /^ {4}bind :/m.test(rendered)) {
    throw new Error('deploy/haproxy/haproxy.cfg no longer has the shape renderLocalHaproxyConfig expects');
  }
  return rendered;
}
