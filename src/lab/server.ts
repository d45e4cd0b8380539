// The lab's built-in pod server: for each declared containerPort it answers with
// the pod's "<namespace>/<name>" — TCP: written on connect; UDP: sent in reply to any
// datagram. Run inside the pod's namespace by the lab (`ip netns exec`).
//   node server.js NAME tcp:80 udp:53 ...
// With SKIFF_LAB_STARTED=<file> it creates that file once every port is bound: the lab
// counts the container as started (and probes its readiness) only then, as a runtime
// would not report a container running before its entrypoint runs.
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';

const [ident, ...ports] = process.argv.slice(2);
if (!ident || ports.length === 0) {
  process.stderr.write('usage: server.js NAMESPACE/NAME tcp:PORT|udp:PORT ...\n');
  process.exit(2);
}
let pending = ports.length;
const bound = (): void => {
  if (--pending === 0 && process.env.SKIFF_LAB_STARTED) writeFileSync(process.env.SKIFF_LAB_STARTED, `${process.pid}\n`);
};
for (const spec of ports) {
  const m = /^(tcp|udp|sctp):(\d+)$/i.exec(spec);
  if (!m) {
    process.stderr.write(`server: invalid port ${JSON.stringify(spec)}\n`);
    process.exit(2);
  }
  const port = Number(m[2]);
  if (m[1]!.toLowerCase() === 'udp') {
    const s = createSocket('udp4');
    s.on('message', (_msg, r) => s.send(`${ident}\n`, r.port, r.address));
    s.bind(port, bound);
  } else if (m[1]!.toLowerCase() === 'tcp') {
    createServer((c) => {
      c.on('error', () => {});
      c.end(`${ident}\n`);
    }).listen(port, bound);
  } else {
    bound(); // sctp: declared, not served (this kernel has no SCTP)
  }
}
