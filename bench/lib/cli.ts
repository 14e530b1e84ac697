import { parseArgs } from 'node:util';
import { maxHttpThreads } from '../../src/config.js';
import { scenarios } from '../scenarios/index.js';
import { allSystems, type SystemName } from './systems.js';
import type { Aim } from './types.js';

/** Command-line options of bench/run.ts. */

export interface BenchOptions {
  scenarios: string[];
  systems: SystemName[];
  durationSec: number | null;
  connections: number | null;
  rate: number | null;
  threads: number | null;
  /** flashstock's HTTP_THREADS (front-end threads), one flashstock run each; [null]: the service's default. */
  httpThreads: (number | null)[];
  /** flashstock as a local cluster of N node processes on one database, one flashstock run each; 1 = one process, no cluster. */
  nodes: number[];
  warmupSec: number;
  timeoutMs: number;
  url: string | null;
  adminToken: string | null;
  jwtSecret: string | null;
  databaseUrl: string | null;
  redisUrl: string | null;
  shoppers: number | null;
  stock: number | null;
  skus: number | null;
  outDir: string;
  wrk: boolean;
  cpuProf: boolean;
  scrapeMetrics: boolean;
  /** --to-owner / --to-others; both: a run of each, and the extra CPU of a forwarded request from the two (none: round robin, as a load balancer would). */
  aims: Aim[];
  verbose: boolean;
  help: boolean;
}

export const usage = `Usage: node --import tsx bench/run.ts [options]   (npm run bench -- [options])

  --scenario NAME[,NAME]   ${Object.keys(scenarios).join(', ')}, or all (default hot-sku)
  --duration SECONDS       per run, for timed scenarios (default 10)
  --connections N          keep-alive connections (default per scenario: 256; sellout 1000)
  --rate N                 open loop at N requests/s (latency from the intended send time); default closed loop
  --threads N              load-generator threads (default half the cores, at least 1)
  --compare                also run the baselines rowlock, redis-lua (not durable), redis-durable and hello, same load
  --systems LIST           exactly these systems: flashstock,rowlock,redis-lua,redis-durable,hello
  --http-threads N[,N]     flashstock's front-end threads (HTTP_THREADS, 1..${maxHttpThreads}; default the service's: the cores less one, at least 1);
                           a list runs flashstock once per value (e.g. 1,2: CPU per 1,000 reservations for each)
  --nodes N[,N]            flashstock as a local cluster of N node processes on one database (CLUSTER_SECRET,
                           default SHARD_COUNT), the load spread round robin over the nodes' URLs (default 1:
                           one process, no cluster); a list runs each in turn (e.g. 1,3: single node vs 3 nodes)
  --to-owner               a cluster diagnostic: each connection sends only requests for SKUs its node owns (nothing
                           forwarded), to tell what a cluster costs before forwarding from what forwarding costs
  --to-others              the other cluster diagnostic: only requests for SKUs another node owns (all forwarded);
                           with --to-owner too, a run of each and the extra CPU of one forwarded request from the two
  --warmup SECONDS         warm-up load on a separate SKU before each run (default 2; 0 = none)
  --timeout MS             per-request timeout (default 10000)
  --url URL                target a running flashstock instead of starting one; needs --admin-token and
                           --jwt-secret, and --database-url for the post-run check (else it is skipped, loudly)
  --admin-token T  --jwt-secret S  --database-url URL
  --redis-url URL          Redis for redis-lua (default REDIS_URL, else a redis-server started on a free port)
  --shoppers N --stock N --skus N   reshape a scenario (e.g. sellout shoppers, many-skus SKU count)
  --out DIR                where results go (default bench/results)
  --wrk                    also measure hello with wrk (if installed), to show the generator's own ceiling
  --cpu-prof               run flashstock under node --cpu-prof (profiles in OUT/prof)
  --scrape-metrics         GET flashstock's /metrics every second during each measured run (metrics cost)
  --verbose                pass the servers' logs through
`;

function positive(name: string, raw: string | undefined, allowZero = false): number | null {
  if (raw === undefined) return null;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got ${raw}`);
  return n;
}

/** Most node processes `--nodes` starts (each a full service on this machine). */
export const maxBenchNodes = 16;

/** A comma-separated list of distinct integers in 1..max, in the order given. */
function intList(name: string, raw: string, max: number): number[] {
  const values = raw.split(',').map((s) => Number(s.trim()));
  for (const n of values) if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`--${name} takes integers 1..${max} (comma-separated), got ${raw}`);
  if (new Set(values).size !== values.length) throw new Error(`--${name} lists a value twice: ${raw}`);
  return values;
}

export function parseCli(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    allowPositionals: false,
    options: {
      scenario: { type: 'string' },
      duration: { type: 'string' },
      connections: { type: 'string' },
      rate: { type: 'string' },
      threads: { type: 'string' },
      'http-threads': { type: 'string' },
      nodes: { type: 'string' },
      compare: { type: 'boolean', default: false },
      systems: { type: 'string' },
      warmup: { type: 'string' },
      timeout: { type: 'string' },
      url: { type: 'string' },
      'admin-token': { type: 'string' },
      'jwt-secret': { type: 'string' },
      'database-url': { type: 'string' },
      'redis-url': { type: 'string' },
      shoppers: { type: 'string' },
      stock: { type: 'string' },
      skus: { type: 'string' },
      out: { type: 'string' },
      wrk: { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      'scrape-metrics': { type: 'boolean', default: false },
      'to-owner': { type: 'boolean', default: false },
      'to-others': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const scenarioNames = (values.scenario ?? 'hot-sku') === 'all' ? Object.keys(scenarios) : (values.scenario ?? 'hot-sku').split(',').map((s) => s.trim());
  for (const s of scenarioNames) if (scenarios[s] === undefined) throw new Error(`unknown scenario ${s} (known: ${Object.keys(scenarios).join(', ')})`);
  let systems: SystemName[] = values.compare ? [...allSystems] : ['flashstock'];
  if (values.systems !== undefined) {
    systems = values.systems.split(',').map((s) => s.trim()) as SystemName[];
    for (const s of systems) if (!allSystems.includes(s)) throw new Error(`unknown system ${s} (known: ${allSystems.join(', ')})`);
  }
  const int = (name: string, raw: string | undefined, allowZero = false): number | null => {
    const n = positive(name, raw, allowZero);
    if (n !== null && !Number.isInteger(n)) throw new Error(`--${name} must be an integer`);
    return n;
  };
  const nodes = values.nodes === undefined ? [1] : intList('nodes', values.nodes, maxBenchNodes);
  if (nodes.some((n) => n > 1)) {
    if (values.url !== undefined) throw new Error('--nodes starts a local cluster; it cannot be combined with --url');
    if (!systems.includes('flashstock')) throw new Error('--nodes applies to flashstock: add it to --systems');
  }
  for (const flag of ['to-owner', 'to-others'] as const) {
    if (values[flag] === true && !nodes.some((n) => n > 1)) throw new Error(`--${flag} is a cluster diagnostic: it needs --nodes with more than one node`);
  }
  return {
    scenarios: scenarioNames,
    systems,
    durationSec: positive('duration', values.duration),
    connections: int('connections', values.connections),
    rate: positive('rate', values.rate),
    threads: int('threads', values.threads),
    httpThreads: values['http-threads'] === undefined ? [null] : intList('http-threads', values['http-threads'], maxHttpThreads),
    nodes,
    warmupSec: positive('warmup', values.warmup, true) ?? 2,
    timeoutMs: int('timeout', values.timeout) ?? 10_000,
    url: values.url ?? null,
    adminToken: values['admin-token'] ?? null,
    jwtSecret: values['jwt-secret'] ?? null,
    databaseUrl: values['database-url'] ?? null,
    redisUrl: values['redis-url'] ?? null,
    shoppers: int('shoppers', values.shoppers),
    stock: int('stock', values.stock, true),
    skus: int('skus', values.skus),
    outDir: values.out ?? 'bench/results',
    wrk: values.wrk ?? false,
    cpuProf: values['cpu-prof'] ?? false,
    scrapeMetrics: values['scrape-metrics'] ?? false,
    aims: [...(values['to-owner'] === true ? ['owner' as const] : []), ...(values['to-others'] === true ? ['other' as const] : [])],
    verbose: values.verbose ?? false,
    help: values.help ?? false,
  };
}
