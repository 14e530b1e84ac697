import { openApiDocument } from '../openapi.js';
import type { Router } from '../router.js';

/** The API's own description (src/http/openapi.ts). */
export function registerOpenApiRoutes(router: Router): void {
  router.route('/openapi.json', {
    get: (exchange) => exchange.send(200, openApiDocument),
  });
}
