// Structured JSON logs, one object a line on stderr, with a component field.
export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold: number = ORDER[(process.env.SKIFF_LOG_LEVEL as Level) ?? 'info'] ?? ORDER.info;
let sink: (line: string) => void = (line) => process.stderr.write(line + '\n');

export function setLogLevel(level: Level): void {
  if (!(level in ORDER)) throw new Error(`log level: invalid value ${JSON.stringify(level)} (debug, info, warn, error)`);
  threshold = ORDER[level];
}

/** Redirects log lines (tests capture them). Returns the previous sink. */
export function setLogSink(fn: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = fn;
  return prev;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

export function logger(component: string): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    sink(JSON.stringify({ ts: new Date().toISOString(), level, component, msg, ...fields }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => logger(`${component}.${c}`),
  };
}
