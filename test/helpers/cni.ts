// Invokes the real bin/skiff-cni exactly as a container runtime does: CNI_*
// environment, the network configuration on stdin, run inside a node namespace.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const PLUGIN = join(ROOT, 'bin', 'skiff-cni');
export const CNI_PATH = [join(ROOT, 'bin'), '/usr/lib/cni'].join(':');

export interface PluginCall {
  command: 'ADD' | 'DEL' | 'CHECK' | 'GC' | 'STATUS' | 'VERSION' | string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path?: string;
  /** Run the plugin inside this named namespace (the node). */
  nodeNs?: string;
  extraEnv?: Record<string, string>;
  plugin?: string;
}

export interface PluginResult {
  code: number;
  stdout: string;
  stderr: string;
  json?: any;
  ms: number;
}

export function runPlugin(call: PluginCall, conf: unknown): Promise<PluginResult> {
  const env: Record<string, string> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: call.command, CNI_PATH: call.path ?? CNI_PATH };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
  if (call.args !== undefined) env.CNI_ARGS = call.args;
  Object.assign(env, call.extraEnv ?? {});
  const plugin = call.plugin ?? PLUGIN;
  const [file, argv] = call.nodeNs ? ['ip', ['netns', 'exec', call.nodeNs, plugin]] : [plugin, []];
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv as string[], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      let json: unknown;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code: code ?? 1, stdout, stderr, json, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(typeof conf === 'string' ? conf : JSON.stringify(conf));
  });
}

/** A bridge network config with host-local IPAM. */
export function bridgeConf(o: {
  name?: string;
  cniVersion?: string;
  subnet?: string;
  dataDir: string;
  bridge?: string;
  ipMasq?: boolean;
  extra?: Record<string, unknown>;
  ipam?: Record<string, unknown>;
}): Record<string, unknown> {
  return {
    cniVersion: o.cniVersion ?? '1.0.0',
    name: o.name ?? 'sktnet',
    type: 'skiff-cni',
    bridge: o.bridge ?? 'cni0',
    isGateway: true,
    isDefaultGateway: true,
    ipMasq: o.ipMasq ?? false,
    hairpinMode: true,
    ipam: o.ipam ?? { type: 'host-local', ranges: [[{ subnet: o.subnet ?? '10.88.0.0/24' }]], dataDir: o.dataDir },
    ...o.extra,
  };
}
