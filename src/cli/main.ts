// `skiff <command>`: a thin dispatcher. Each command's module is loaded only when
// it is used, so `skiff lab status` never pays for prom-client or the DNS server.
const commands: Record<string, { describe: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  agent: { describe: 'run the node agent', load: () => import('../agent/cli.js') },
  dns: { describe: 'run the cluster DNS server standalone', load: () => import('../dns/cli.js') },
  lab: { describe: 'a multi-node cluster on this machine (up, down, status, get, probe, exec, apply, delete, node, matrix)', load: () => import('../lab/cli.js') },
  policy: { describe: 'NetworkPolicy tools (explain)', load: () => import('../policy/cli.js') },
};

function usage(): string {
  const lines = Object.entries(commands).map(([n, c]) => `  ${n.padEnd(8)} ${c.describe}`);
  return `usage: skiff <command> [flags]\n\ncommands:\n${lines.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`skiff: unknown command ${JSON.stringify(name)}\n${usage()}`);
    return 2;
  }
  const mod = await cmd.load();
  return mod.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`skiff: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
