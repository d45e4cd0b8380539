// IPAM failures carry the CNI error code the plugin should report:
// 7 invalid configuration, 5 I/O, 11 try again later, 100+ skiff's own.
export class IpamError extends Error {
  constructor(
    message: string,
    readonly cniCode: number = 100,
  ) {
    super(message);
    this.name = 'IpamError';
  }
}

/** No free address in a range set (skiff's own code). */
export const CODE_EXHAUSTED = 110;
/** A requested address is taken or outside every range. */
export const CODE_REQUESTED_UNAVAILABLE = 111;
