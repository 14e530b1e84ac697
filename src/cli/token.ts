import { ConfigError, loadConfig } from '../config.js';
import { readSecrets, secretsPath } from '../secrets.js';
import { signShopperToken, maxShopperIdLength } from '../auth/auth.js';

/**
 * `npm run token -- <shopperId> [expiresInSeconds]`: print a shopper JWT for
 * the configured secret, good for JWT_MAX_LIFETIME_SECONDS unless told less
 * (the service refuses longer-lived tokens).
 */
async function main(): Promise<void> {
  const [shopperId, expires] = process.argv.slice(2);
  if (shopperId === undefined || shopperId.length === 0 || shopperId.length > maxShopperIdLength) {
    process.stderr.write(`usage: npm run token -- <shopperId (1-${maxShopperIdLength} chars)> [expiresInSeconds]\n`);
    process.exit(2);
  }
  const config = loadConfig();
  const secret = config.jwtSecret ?? (await readSecrets(config.dataDir)).jwtSecret;
  if (secret === undefined) {
    process.stderr.write(`no JWT_SECRET set and none kept in ${secretsPath(config.dataDir)}: start the service once, or set JWT_SECRET\n`);
    process.exit(1);
  }
  const expiresInSeconds = expires === undefined ? config.jwtMaxLifetimeSeconds : Number(expires);
  if (!(Number.isInteger(expiresInSeconds) && expiresInSeconds > 0 && expiresInSeconds <= config.jwtMaxLifetimeSeconds)) {
    process.stderr.write(`expiresInSeconds must be a whole number of seconds from 1 to ${config.jwtMaxLifetimeSeconds} (JWT_MAX_LIFETIME_SECONDS)\n`);
    process.exit(2);
  }
  process.stdout.write(signShopperToken(secret, shopperId, expiresInSeconds) + '\n');
}

main().catch((error: unknown) => {
  // A configuration problem is one line and exit 2, as for the service.
  if (error instanceof ConfigError) {
    process.stderr.write(`configuration error: ${error.message}\n`);
    process.exit(2);
  }
  throw error;
});
