// The CniError a call throws (the unit tests check its code and message).
import { CniError } from '../../src/cni/errors.js';

export function cniError(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e;
    throw e;
  }
  throw new Error('expected a CniError');
}
