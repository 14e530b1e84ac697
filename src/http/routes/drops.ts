import type { Exchange } from '../exchange.js';
import type { HttpDependencies } from '../dependencies.js';
import { admin, jsonBody } from '../guards.js';
import type { Router } from '../router.js';
import type uWS from 'uWebSockets.js';
import { dropNameRule, isDropName, toDropDefinition, validateDropBody } from '../../drops/body.js';
import type { DropOutcome } from '../../drops/drops.js';

/** Drops: define, read and stop (admin) and watch (public) recurring sale cycles. */
export function registerDropRoutes(router: Router, deps: Pick<HttpDependencies, 'drops' | 'isAdmin'>): void {
  const { drops } = deps;

  router.route('/v1/admin/drops/:name', {
    put: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const name = dropParameter(exchange, req);
      if (name === null) return;
      jsonBody(exchange, req, validateDropBody, (body) => {
        const parsed = toDropDefinition(body);
        if (!parsed.ok) return exchange.problem('invalid_request', parsed.detail);
        exchange.settle(drops.put(name, parsed.definition), (outcome) => {
          if (outcome.ok) exchange.send(outcome.value.created ? 201 : 200, outcome.value.view);
          else exchange.problem(outcome.code, outcome.detail);
        });
      });
    },
    get: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const name = dropParameter(exchange, req);
      if (name === null) return;
      exchange.settle(drops.view(name), (outcome) => found(exchange, outcome, name));
    },
    del: (exchange, req) => {
      if (!admin(exchange, req, deps.isAdmin)) return;
      const name = dropParameter(exchange, req);
      if (name === null) return;
      exchange.settle(drops.remove(name), (outcome) => found(exchange, outcome, name));
    },
  });

  router.route('/v1/drops/:name', {
    get: (exchange, req) => {
      const name = dropParameter(exchange, req);
      if (name === null) return;
      exchange.settle(drops.view(name), (outcome) => found(exchange, outcome, name));
    },
  });
}

function dropParameter(exchange: Exchange, req: uWS.HttpRequest): string | null {
  const name = req.getParameter(0);
  if (isDropName(name)) return name;
  exchange.problem('invalid_request', dropNameRule);
  return null;
}

function found<T>(exchange: Exchange, outcome: DropOutcome<T | null>, name: string): void {
  if (!outcome.ok) exchange.problem(outcome.code, outcome.detail);
  else exchange.found(outcome.value, `drop ${name} does not exist`);
}
