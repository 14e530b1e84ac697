import { workerFile } from '../snapshot/workers.js';

/**
 * The `eval` entry of a worker thread running the module `name` next to
 * `moduleUrl`. A worker does not inherit tsx's module hooks (tests and the
 * bench run the .ts sources): under tsx the entry registers them in the
 * thread first; compiled, it just imports the .js.
 */
export function threadEntry(moduleUrl: string, name: string): string {
  const file = workerFile(moduleUrl, name);
  return file.endsWith('.ts')
    ? `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(file)}); })`
    : `import(${JSON.stringify(file)})`;
}
