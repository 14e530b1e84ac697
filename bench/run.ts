import { runBench } from './lib/bench.js';
import { parseCli, usage } from './lib/cli.js';

/** `npm run bench -- [options]`: see bench/README.md. */

// Two scenarios have their own scripts: `waiting-room` joins and polls tickets (bench/waiting-room.ts),
// `carts` alternates carts and single reservations in one run (bench/carts.ts; the harness's
// post-run check reads only `reserved` events, not cart lines).
const scenarioAt = process.argv.indexOf('--scenario');
if (scenarioAt > 0 && process.argv[scenarioAt + 1] === 'waiting-room') {
  const { runWaitingRoomBench } = await import('./waiting-room.js');
  await runWaitingRoomBench(process.argv.slice(2));
  process.exit(0);
}
if (scenarioAt > 0 && process.argv[scenarioAt + 1] === 'carts') {
  await import('./carts.js'); // runs on import, reading --seconds and --connections
  process.exit(0);
}

let options;
try {
  options = parseCli(process.argv.slice(2));
} catch (error) {
  process.stderr.write(`${(error as Error).message}\n\n${usage}`);
  process.exit(2);
}
if (options.help) {
  process.stdout.write(usage);
  process.exit(0);
}

try {
  const outcome = await runBench(options);
  process.stdout.write(`${outcome.markdown}\n`);
  process.stderr.write(`\nwrote ${outcome.files.join(', ')}\n`);
  if (!outcome.ok) {
    const failed = outcome.report.runs.filter((r) => r.check.status === 'failed');
    process.stderr.write(
      outcome.report.runs.length === 0
        ? '\x1b[31mNOTHING RAN\x1b[0m\n'
        : `\x1b[31mCHECK FAILED: ${failed.map((r) => `${r.system} ${r.scenario}`).join(', ')}\x1b[0m\n`,
    );
    for (const r of failed) {
      if (r.check.status === 'skipped') continue;
      for (const c of r.check.report.checks.filter((x) => !x.ok)) process.stderr.write(`\x1b[31m  ${r.system} ${r.scenario}: ${c.name}: ${c.detail}\x1b[0m\n`);
    }
    process.exit(1);
  }
  process.exit(0);
} catch (error) {
  process.stderr.write(`\x1b[31mbench failed: ${(error as Error).stack ?? String(error)}\x1b[0m\n`);
  process.exit(1);
}
