/**
 * A test that cannot run on this machine (a program is missing): a TAP
 * `ok N - <reason> # SKIP` point, which tap and .ci/run count as skipped, never
 * as passed, plus a line on stderr so a run by hand shows it too.
 */
export function skipBecause(t: { skip(name: string, cb: () => void): unknown }, reason: string): void {
  process.stderr.write(`\n*** SKIP: ${reason} ***\n\n`);
  void t.skip(reason, () => undefined);
}
