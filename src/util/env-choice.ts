/**
 * Tuning switches read from the environment (TSVMM_POLLER, TSVMM_VCPU_SCHED): one of a few words,
 * or unset for the default. A misspelt value is an error, not the default in silence: whoever set
 * it is measuring something and would otherwise measure the wrong thing.
 */
import { TsvmmError } from './errors.js';

/** An environment variable tsvmm reads holds a value it does not know. */
export class EnvironmentSettingError extends TsvmmError {}

/** The value of `name` in `env` when it is one of `choices`, `fallback` when unset or empty; EnvironmentSettingError otherwise. */
export function environmentChoice<T extends string>(name: string, choices: readonly T[], fallback: T, env: NodeJS.ProcessEnv = process.env): T {
  const value = env[name];
  if (value === undefined || value === '') return fallback;
  const chosen = choices.find((c) => c === value);
  if (chosen === undefined) throw new EnvironmentSettingError(`${name}=${value} is not a setting tsvmm knows: use one of ${choices.join(', ')} (default ${fallback}), or unset it`);
  return chosen;
}
