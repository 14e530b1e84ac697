import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * The embedded default's secrets: generated once, kept in `<dataDir>/secrets.json`
 * (mode 600), so tokens minted yesterday still verify today.
 */
export interface Secrets {
  adminToken: string;
  jwtSecret: string;
}

export function secretsPath(dataDir: string): string {
  return path.join(dataDir, 'secrets.json');
}

export async function readSecrets(dataDir: string): Promise<Partial<Secrets>> {
  try {
    return JSON.parse(await readFile(secretsPath(dataDir), 'utf8')) as Partial<Secrets>;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw error;
  }
}

/** Fill what the environment left unset from the file, generating and saving what is missing. */
export async function loadOrCreateSecrets(
  dataDir: string,
  given: { adminToken: string | null; jwtSecret: string | null },
): Promise<Secrets & { generated: string[]; file: string }> {
  const stored = await readSecrets(dataDir);
  const generated: string[] = [];
  const adminToken = given.adminToken ?? stored.adminToken ?? (generated.push('ADMIN_TOKEN'), randomBytes(24).toString('base64url'));
  const jwtSecret = given.jwtSecret ?? stored.jwtSecret ?? (generated.push('JWT_SECRET'), randomBytes(32).toString('base64url'));
  const file = secretsPath(dataDir);
  if (generated.length > 0) {
    await mkdir(dataDir, { recursive: true });
    await writeFile(file, JSON.stringify({ ...stored, adminToken: stored.adminToken ?? adminToken, jwtSecret: stored.jwtSecret ?? jwtSecret }, null, 2) + '\n', { mode: 0o600 });
  }
  return { adminToken, jwtSecret, generated, file };
}
