/**
 * A clock a test moves by hand (StartOptions.nowMs, StartOptions.frontEndNowMs,
 * Drops' nowMs): what the service measures against it cannot depend on how fast
 * the machine is.
 */
export interface ManualClock {
  nowMs: () => number;
  advance(ms: number): void;
}

export function manualClock(startMs = Date.parse('2030-01-01T00:00:00Z')): ManualClock {
  let now = startMs;
  return {
    nowMs: () => now,
    advance: (ms: number) => {
      if (!(ms >= 0)) throw new Error(`a test clock only moves forward (advance ${ms})`);
      now += ms;
    },
  };
}
