import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { openApiDocument } from '../src/http/openapi.js';

/**
 * Writes src/http/openapi.json from src/http/openapi.ts (the document the service
 * serves at /openapi.json), for clients and code generators that want a file.
 * `--check` exits 1 when the file is not current (test/openapi.test.ts checks too).
 */
export const openApiFile = fileURLToPath(new URL('../src/http/openapi.json', import.meta.url));
export const openApiText = `${JSON.stringify(openApiDocument, null, 2)}\n`;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--check')) {
    const current = await readFile(openApiFile, 'utf8').catch(() => '');
    if (current !== openApiText) {
      console.error(`${openApiFile} is out of date: run npm run openapi`);
      process.exit(1);
    }
  } else {
    await writeFile(openApiFile, openApiText);
    console.log(`wrote ${openApiFile}`);
  }
}
