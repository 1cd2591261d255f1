/**
 * Tuning switches from the environment: unset or empty gives the default, a known word is taken,
 * anything else is a one-line error naming the variable and its choices (not the default in
 * silence).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EnvironmentSettingError, environmentChoice } from '../../src/util/env-choice.js';
import { defaultWait } from '../../src/vmm/eventfd-poller.js';
import { vcpuSchedulingPolicy } from '../../src/vmm/vcpu-runner.js';

const choices = ['normal', 'batch'] as const;

test('an unset or empty variable gives the default', () => {
  assert.equal(environmentChoice('TSVMM_X', choices, 'normal', {}), 'normal');
  assert.equal(environmentChoice('TSVMM_X', choices, 'normal', { TSVMM_X: '' }), 'normal');
});

test('a known value is taken', () => {
  assert.equal(environmentChoice('TSVMM_X', choices, 'normal', { TSVMM_X: 'batch' }), 'batch');
});

test('an unknown value is an EnvironmentSettingError naming the variable and the choices', () => {
  assert.throws(
    () => environmentChoice('TSVMM_X', choices, 'normal', { TSVMM_X: 'Batch' }),
    (e: unknown) => e instanceof EnvironmentSettingError && e.message === 'TSVMM_X=Batch is not a setting tsvmm knows: use one of normal, batch (default normal), or unset it',
  );
});

test('TSVMM_POLLER: held by default, the other waits by name, a misspelling refused', () => {
  assert.equal(defaultWait({}), 'held');
  assert.equal(defaultWait({ TSVMM_POLLER: 'main-loop' }), 'main-loop');
  assert.equal(defaultWait({ TSVMM_POLLER: 'threadpool' }), 'threadpool');
  assert.throws(() => defaultWait({ TSVMM_POLLER: 'mainloop' }), EnvironmentSettingError);
});

test('TSVMM_VCPU_SCHED: batch by default, normal by name, a misspelling refused', () => {
  assert.equal(vcpuSchedulingPolicy({}), 'batch');
  assert.equal(vcpuSchedulingPolicy({ TSVMM_VCPU_SCHED: 'normal' }), 'normal');
  assert.throws(() => vcpuSchedulingPolicy({ TSVMM_VCPU_SCHED: 'other' }), EnvironmentSettingError);
});
