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
  paymentWebhookSecret: string;
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
  given: { adminToken: string | null; jwtSecret: string | null; paymentWebhookSecret: string | null },
): Promise<Secrets & { generated: string[]; file: string }> {
  const stored = await readSecrets(dataDir);
  const generated: string[] = [];
  const pick = (name: string, given: string | null, kept: string | undefined, bytes: number): string => {
    if (given !== null) return given;
    if (kept !== undefined) return kept;
    generated.push(name);
    return randomBytes(bytes).toString('base64url');
  };
  const secrets: Secrets = {
    adminToken: pick('ADMIN_TOKEN', given.adminToken, stored.adminToken, 24),
    jwtSecret: pick('JWT_SECRET', given.jwtSecret, stored.jwtSecret, 32),
    paymentWebhookSecret: pick('PAYMENT_WEBHOOK_SECRET', given.paymentWebhookSecret, stored.paymentWebhookSecret, 32),
  };
  const file = secretsPath(dataDir);
  if (generated.length > 0) {
    // Keep what the file had; add only what was generated now (never the environment's own values).
    const toKeep: Partial<Secrets> = { ...stored };
    if (generated.includes('ADMIN_TOKEN')) toKeep.adminToken = secrets.adminToken;
    if (generated.includes('JWT_SECRET')) toKeep.jwtSecret = secrets.jwtSecret;
    if (generated.includes('PAYMENT_WEBHOOK_SECRET')) toKeep.paymentWebhookSecret = secrets.paymentWebhookSecret;
    await mkdir(dataDir, { recursive: true });
    await writeFile(file, JSON.stringify(toKeep, null, 2) + '\n', { mode: 0o600 });
  }
  return { ...secrets, generated, file };
}
