// The executor seam: every adapter that runs a program takes one of these, so unit
// tests inject a fake and integration tests the real thing.

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Run inside this named network namespace (`ip netns exec NAME`). */
  netns?: string;
  timeoutMs?: number;
}

export type Executor = (cmd: string, args: string[], opts?: ExecOptions) => Promise<ExecResult>;

export const realExec: Executor = (cmd, args, opts = {}) =>
  new Promise((resolve, reject) => {
    const [file, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, cmd, ...args]] : [cmd, args];
    // child_process loads on first use (the CNI plugin runs nft only with ipMasq).
    const { spawn } = process.getBuiltinModule('node:child_process');
    const child = spawn(file, argv, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });

/** Runs and throws with the command's stderr when it exits non-zero. */
export async function mustExec(exec: Executor, cmd: string, args: string[], opts?: ExecOptions): Promise<string> {
  const r = await exec(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}
