import { Piscina } from 'piscina';
import type { SnapshotResult, SnapshotTask } from './worker.js';

/**
 * The main thread's handle on the background worker threads (snapshots, the
 * ledger audit). Tasks and results are plain data. Under tsx (tests,
 * `node --import tsx`) the workers load the .ts files, since worker threads
 * inherit the parent's execArgv; compiled, they load dist/**.js.
 */

/** A worker module next to `moduleUrl`, in the same flavour (.ts under tsx, .js compiled). */
export function workerFile(moduleUrl: string, name: string): string {
  return new URL(`./${name}${moduleUrl.endsWith('.ts') ? '.ts' : '.js'}`, moduleUrl).href;
}

const snapshotWorkerFile = workerFile(import.meta.url, 'worker');

export interface SnapshotWorkersOptions {
  /** Worker threads (background work should not take the allocators' core). Default 1. */
  threads?: number;
  /** Tasks waiting for a thread; past it `run` rejects at once. Default 1024. */
  maxQueue?: number;
  /**
   * Keep one thread loaded from the start (default: start threads on demand, end them
   * when idle). A thread's start loads every module again (seconds of CPU under tsx),
   * which otherwise lands in the middle of the load that triggered the first snapshot.
   */
  warm?: boolean;
}

export class SnapshotWorkers {
  private pool: Piscina | null = null;

  constructor(private readonly options: SnapshotWorkersOptions = {}) {}

  start(): void {
    if (this.pool !== null) return;
    const threads = this.options.threads ?? 1;
    this.pool = new Piscina({
      filename: snapshotWorkerFile,
      minThreads: this.options.warm === true ? 1 : 0,
      maxThreads: threads,
      maxQueue: this.options.maxQueue ?? 1024,
      idleTimeout: 30_000,
    });
  }

  /** Write a SKU's next snapshot from the log alone (see worker.ts; the service's shards snapshot their allocators). */
  snapshot(task: SnapshotTask): Promise<SnapshotResult> {
    return this.run<SnapshotResult>(snapshotWorkerFile, task);
  }

  /** Run the default export of another worker module (a file URL from `workerFile`). */
  run<T>(filename: string, task: unknown): Promise<T> {
    if (this.pool === null) return Promise.reject(new Error('SnapshotWorkers is not started'));
    return this.pool.run(task, { filename }) as Promise<T>;
  }

  /** Waits for running tasks, then ends the threads (and their Postgres connections). */
  async stop(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (pool !== null) await pool.close();
  }
}
