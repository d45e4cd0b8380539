// CNI errors: the spec's well-known codes and the JSON error result
// `{cniVersion, code, msg, details}` printed on stdout with a non-zero exit.
// Every helper builds a message that names the offending field (or variable)
// and the value it had, so an operator can fix the config from the message alone.

/** Well-known error codes (CNI SPEC 1.1.0, "Error"). 100+ are plugin-specific. */
export const ErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
  /** STATUS: the plugin cannot service ADD requests. */
  PluginNotAvailable: 50,
  /** STATUS: not available, and existing containers may have limited connectivity. */
  PluginNotAvailableLimitedConnectivity: 51,
  /** First plugin-specific code. */
  PluginSpecific: 100,
  /** What libcni uses for errors that carry no code. */
  Internal: 999,
} as const;

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniError extends Error {
  readonly code: number;
  readonly msg: string;
  readonly details: string | undefined;

  constructor(code: number, msg: string, details?: string, options?: { cause?: unknown }) {
    super(details ? `${msg}: ${details}` : msg, options);
    this.name = 'CniError';
    this.code = code;
    this.msg = msg;
    this.details = details || undefined;
  }

  /** The spec's error result, in the given (config's) version. */
  toJSON(cniVersion: string = '1.1.0'): CniErrorJson {
    const out: CniErrorJson = { cniVersion, code: this.code, msg: this.msg };
    if (this.details) out.details = this.details;
    return out;
  }
}

/** Wraps anything thrown into a CniError (code 999 unless it already is one). */
export function toCniError(err: unknown, code: number = ErrorCode.Internal): CniError {
  if (err instanceof CniError) return err;
  if (err instanceof Error) return new CniError(code, err.message, undefined, { cause: err });
  return new CniError(code, String(err));
}

/** Renders a value for a message: strings quoted, objects as compact JSON, undefined as "undefined". */
export function showValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'bigint') return value.toString();
  try {
    const s = JSON.stringify(value);
    if (s === undefined) return String(value);
    return s.length > 200 ? `${s.slice(0, 197)}...` : s;
  } catch {
    return String(value);
  }
}

/** Code 4: an environment variable is missing or invalid. */
export function invalidEnv(variable: string, value: string | undefined, expected: string): CniError {
  if (value === undefined || value === '') {
    return new CniError(ErrorCode.InvalidEnvironment, `${variable}: required environment variable is missing (${expected})`);
  }
  return new CniError(ErrorCode.InvalidEnvironment, `${variable}: invalid value ${showValue(value)} (${expected})`);
}

/** Code 7: e.g. `mtu: invalid value "abc" (an integer from 68 to 65535)`. */
export function invalidField(field: string, value: unknown, expected: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, `${field}: invalid value ${showValue(value)} (${expected})`);
}

/** Code 7: a required field is absent. */
export function missingField(field: string, expected: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, `${field}: required field is missing (${expected})`);
}

/** Code 2: the spec requires the message to contain the key and the value. */
export function unsupportedField(field: string, value: unknown, why?: string): CniError {
  return new CniError(
    ErrorCode.UnsupportedField,
    `${field}: unsupported field (value ${showValue(value)})${why ? `: ${why}` : ''}`,
  );
}

/** Code 1. */
export function incompatibleVersion(msg: string, details?: string): CniError {
  return new CniError(ErrorCode.IncompatibleVersion, msg, details);
}

/** Code 6. */
export function decodeFailure(what: string, err: unknown): CniError {
  const reason = err instanceof Error ? err.message : String(err);
  return new CniError(ErrorCode.DecodingFailure, `${what}: cannot decode JSON`, reason);
}
