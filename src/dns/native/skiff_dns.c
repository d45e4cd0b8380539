// The DNS UDP fast path: one UDP socket per address family, read by one native thread
// per core (no SO_REUSEPORT: see FastUdp in fastpath.ts), each
// looping recvmmsg -> answer from a shared answer cache -> sendmmsg, without touching
// JavaScript. The cache is keyed by everything an answer depends on, normalised from
// the query's wire bytes (RD, CD, EDNS presence, DO, the effective UDP size limit,
// QTYPE, QCLASS and the lowercased QNAME); a hit copies the stored answer and patches
// the query's ID and its QNAME bytes (so the client's case is echoed). Anything the
// cache cannot answer (first sight of a question, forwarded names, malformed packets,
// anything unusual) goes to JavaScript through a thread-safe function; JavaScript
// replies with send() and, for answers that depend only on the key, stores them with
// put(). clear() empties the cache when the zone changes.
//
//   bindUdp(host, port, v6only[, reuseport=true]) -> fd  UDP socket, SO_REUSEPORT unless reuseport is false
//                                            (created in the calling thread's netns)
//   bindTcp(host, port, v6only) -> fd        listening TCP socket (for net.Server.listen({fd}))
//   localPort(fd) -> port
//   cpuCount() -> CPUs in this thread's affinity mask
//   start(fds[], families[], maxUdp, maxEntries, maxBytes, onMiss(worker, pkt, addr)) -> handle
//   send(handle, worker, addr, data) -> bool
//   put(handle, query, response, typeIndex, rcode) -> bool
//   clear(handle)
//   stats(handle) -> Float64Array (see STAT_* below), counters reset on read
//   stop(handle)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <math.h>
#include <unistd.h>
#include <node_api.h>

#define BATCH 64
#define PKT 4096            /* receive buffer per query and largest cached answer */
#define KEY_MAX (7 + 256)
#define WAYS 4
#define NT 16               /* type indexes (JS's TYPE_NAMES fits) */
#define NR 24               /* rcode slots */
#define NB 16               /* CoreDNS buckets: 0.00025 * 2^i seconds */
#define NL 64               /* response latency buckets: LAT_BASE_NS * 2^(i/4), i < NL; slot NL: above */
#define LAT_BASE_NS 2000.0
#define MAX_WORKERS 256
#define MISS_QUEUE 8192

/* stats layout (doubles): hits[v6][type][rcode], sums[type], buckets[type][NB], misses, drops, entries, bytes,
   latency[NL + 1], latency sum (seconds) */
#define ST_HITS 0
#define ST_SUMS (ST_HITS + 2 * NT * NR)
#define ST_BUCKETS (ST_SUMS + NT)
#define ST_MISSES (ST_BUCKETS + NT * NB)
#define ST_DROPS (ST_MISSES + 1)
#define ST_ENTRIES (ST_DROPS + 1)
#define ST_BYTES (ST_ENTRIES + 1)
#define ST_LAT (ST_BYTES + 1)
#define ST_LATSUM (ST_LAT + NL + 1)
#define ST_LEN (ST_LATSUM + 1)

typedef struct entry {
  uint32_t hash;
  uint16_t klen, rlen;
  uint8_t tidx, rcode;
  uint8_t data[]; /* key, then response */
} entry;

typedef struct {
  uint64_t hits[2][NT][NR];
  uint64_t sums_ns[NT];
  uint64_t buckets[NT][NB];
  uint64_t misses, drops;
  /* Response latency: from the datagram's arrival in the kernel (SO_TIMESTAMPNS) to
     its answer handed to sendmmsg; what a client waits for, less the network. */
  uint64_t lat[NL + 1];
  uint64_t lat_sum_ns;
  char pad[64];
} counters;

static uint64_t lat_bounds[NL]; /* upper bounds in ns, set by start() */

static int lat_bucket(uint64_t ns) {
  int lo = 0, hi = NL; /* first bound >= ns */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (lat_bounds[mid] >= ns) hi = mid; else lo = mid + 1;
  }
  return lo;
}

struct server;

typedef struct {
  struct server *srv;
  int index, fd, v6;
  pthread_t thread;
  int started;
  counters c;  /* written by this worker only */
  counters last; /* what stats() has already reported */
} worker;

typedef struct server {
  worker *workers;
  int nworkers;
  int maxUdp;
  volatile int stopping, stopped;
  pthread_rwlock_t lock;
  entry **sets; /* nsets * WAYS */
  uint32_t nsets;
  uint32_t rr; /* round-robin way to replace */
  size_t entries, bytes, maxBytes;
  napi_threadsafe_function tsfn;
  int refs; /* the JS handle and the tsfn */
  pthread_mutex_t refLock;
} server;

typedef struct {
  int worker;
  socklen_t alen;
  struct sockaddr_storage addr;
  uint32_t len;
  uint8_t data[];
} miss_item;

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, c;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &c);
  napi_set_named_property(env, e, "errno", c);
  const char *code = err == EADDRINUSE ? "EADDRINUSE" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : err == EACCES ? "EACCES"
                   : err == EINVAL ? "EINVAL" : "EOTHER";
  napi_value cs;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &cs);
  napi_set_named_property(env, e, "code", cs);
  napi_throw(env, e);
  return NULL;
}

static napi_value type_error(napi_env env, const char *msg) {
  napi_throw_type_error(env, NULL, msg);
  return NULL;
}

static uint32_t hash_bytes(const uint8_t *p, int n) {
  uint32_t h = 0x811c9dc5u;
  for (int i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  return h ^ (h >> 15);
}

/*
 * Builds the cache key of a query (see the header comment). Returns the key length, or
 * -1 when the packet is not a plain query the cache may answer (JS decides those).
 * *qnlen receives the QNAME's wire length.
 */
static int make_key(int maxUdp, const uint8_t *q, uint32_t len, uint8_t *key, int *qnlen) {
  if (len < 12 + 1 + 4) return -1;
  if (q[2] & 0xf8) return -1;                                   /* QR set or opcode != QUERY */
  if (q[4] != 0 || q[5] != 1 || q[6] || q[7] || q[8] || q[9] || q[10]) return -1;
  int ar = q[11];
  if (ar > 1) return -1;
  uint32_t p = 12;
  int out = 7;
  for (;;) {
    if (p >= len) return -1;
    uint8_t l = q[p];
    if (l == 0) { key[out++] = 0; p++; break; }
    if (l & 0xc0) return -1;                                    /* compression or reserved types */
    if (p + 1 + l > len || out - 7 + l + 2 > 255) return -1;
    key[out++] = l;
    for (uint32_t i = 1; i <= l; i++) {
      uint8_t b = q[p + i];
      key[out++] = (b >= 'A' && b <= 'Z') ? (b | 0x20) : b;
    }
    p += l + 1;
  }
  *qnlen = out - 7;
  if (p + 4 > len) return -1;
  uint16_t qtype = (q[p] << 8) | q[p + 1];
  uint16_t qclass = (q[p + 2] << 8) | q[p + 3];
  p += 4;
  int edns = 0, dok = 0;
  uint32_t size = 512;
  if (ar == 1) {
    if (p + 11 > len || q[p] != 0) return -1;
    if (((q[p + 1] << 8) | q[p + 2]) != 41) return -1;
    size = (q[p + 3] << 8) | q[p + 4];
    if (q[p + 6] != 0) return -1;                               /* EDNS version: BADVERS is JS's */
    dok = (q[p + 7] & 0x80) != 0;
    uint32_t rdlen = (q[p + 9] << 8) | q[p + 10];
    uint32_t o = p + 11, oe = o + rdlen;
    if (oe != len) return -1;
    while (o < oe) {
      if (o + 4 > oe) return -1;
      o += 4 + ((q[o + 2] << 8) | q[o + 3]);
    }
    if (o != oe) return -1;
    edns = 1;
  } else if (p != len) {
    return -1;
  }
  if (qtype == 0 || qtype == 41 || (qtype >= 251 && qtype <= 254)) return -1; /* FORMERR/REFUSED/NOTIMP: JS's */
  if (qclass != 1 && qclass != 255) return -1;
  uint32_t limit = 512;
  if (edns) {
    if (size < 512) size = 512;
    limit = size < (uint32_t)maxUdp ? size : (uint32_t)maxUdp;
    if (limit < 512) limit = 512;
  }
  key[0] = (q[2] & 0x01) | ((q[3] & 0x10) ? 2 : 0) | (edns ? 4 : 0) | (dok ? 8 : 0);
  key[1] = limit >> 8; key[2] = limit & 0xff;
  key[3] = qtype >> 8; key[4] = qtype & 0xff;
  key[5] = qclass >> 8; key[6] = qclass & 0xff;
  return out;
}

/* Under the read lock. Returns the answer length written to out, or -1. */
static int lookup(server *s, const uint8_t *q, uint32_t len, uint8_t *out, uint8_t *tidx, uint8_t *rcode) {
  uint8_t key[KEY_MAX];
  int qnlen;
  int klen = make_key(s->maxUdp, q, len, key, &qnlen);
  if (klen < 0) return -1;
  uint32_t h = hash_bytes(key, klen);
  entry **set = s->sets + (size_t)(h % s->nsets) * WAYS;
  for (int w = 0; w < WAYS; w++) {
    entry *e = set[w];
    if (!e || e->hash != h || e->klen != klen || memcmp(e->data, key, klen) != 0) continue;
    memcpy(out, e->data + klen, e->rlen);
    out[0] = q[0];
    out[1] = q[1];
    memcpy(out + 12, q + 12, qnlen); /* the client's case */
    *tidx = e->tidx;
    *rcode = e->rcode;
    return e->rlen;
  }
  return -1;
}

static void bump(uint64_t *p) {
  __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static void to_js(server *s, worker *w, const uint8_t *pkt, uint32_t len, struct sockaddr_storage *addr, socklen_t alen) {
  miss_item *it = malloc(sizeof(miss_item) + len);
  if (!it) { bump(&w->c.drops); return; }
  it->worker = w->index;
  it->alen = alen;
  memcpy(&it->addr, addr, alen);
  it->len = len;
  memcpy(it->data, pkt, len);
  if (napi_call_threadsafe_function(s->tsfn, it, napi_tsfn_nonblocking) != napi_ok) {
    free(it);
    bump(&w->c.drops);
    return;
  }
  bump(&w->c.misses);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  server *s = w->srv;
  struct mmsghdr *in = calloc(BATCH, sizeof *in), *out = calloc(BATCH, sizeof *out);
  struct iovec *iin = calloc(BATCH, sizeof *iin), *iout = calloc(BATCH, sizeof *iout);
  struct sockaddr_storage *addr = calloc(BATCH, sizeof *addr);
  uint8_t *rbuf = malloc((size_t)BATCH * PKT), *obuf = malloc((size_t)BATCH * PKT);
  uint8_t tidx[BATCH], rc[BATCH];
  /* Per datagram: the kernel's receive time (SCM_TIMESTAMPNS), and that of each answer. */
  union { char buf[CMSG_SPACE(sizeof(struct timespec))]; struct cmsghdr align; } *ctl = calloc(BATCH, sizeof *ctl);
  struct timespec rx_out[BATCH];
  if (!in || !out || !iin || !iout || !addr || !rbuf || !obuf || !ctl) goto done;
  int one = 1;
  setsockopt(w->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
  for (int i = 0; i < BATCH; i++) {
    iin[i].iov_base = rbuf + (size_t)i * PKT;
    iin[i].iov_len = PKT;
    in[i].msg_hdr.msg_iov = &iin[i];
    in[i].msg_hdr.msg_iovlen = 1;
    in[i].msg_hdr.msg_name = &addr[i];
  }
  while (!s->stopping) {
    for (int i = 0; i < BATCH; i++) {
      in[i].msg_hdr.msg_namelen = sizeof addr[i];
      in[i].msg_hdr.msg_flags = 0;
      in[i].msg_hdr.msg_control = ctl[i].buf;
      in[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
    }
    int n = recvmmsg(w->fd, in, BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue; /* EINTR, the receive timeout, or shutdown() at stop */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int nout = 0;
    pthread_rwlock_rdlock(&s->lock);
    for (int i = 0; i < n; i++) {
      uint8_t *q = rbuf + (size_t)i * PKT;
      uint32_t len = in[i].msg_len;
      if (in[i].msg_hdr.msg_flags & MSG_TRUNC) { bump(&w->c.drops); continue; } /* > PKT bytes: not a query */
      uint8_t *o = obuf + (size_t)nout * PKT;
      int r = lookup(s, q, len, o, &tidx[nout], &rc[nout]);
      if (r < 0) {
        to_js(s, w, q, len, &addr[i], in[i].msg_hdr.msg_namelen);
        continue;
      }
      rx_out[nout].tv_sec = 0;
      rx_out[nout].tv_nsec = 0;
      for (struct cmsghdr *cm = CMSG_FIRSTHDR(&in[i].msg_hdr); cm; cm = CMSG_NXTHDR(&in[i].msg_hdr, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) memcpy(&rx_out[nout], CMSG_DATA(cm), sizeof(struct timespec));
      iout[nout].iov_base = o;
      iout[nout].iov_len = r;
      memset(&out[nout].msg_hdr, 0, sizeof out[nout].msg_hdr);
      out[nout].msg_hdr.msg_name = &addr[i];
      out[nout].msg_hdr.msg_namelen = in[i].msg_hdr.msg_namelen;
      out[nout].msg_hdr.msg_iov = &iout[nout];
      out[nout].msg_hdr.msg_iovlen = 1;
      nout++;
    }
    pthread_rwlock_unlock(&s->lock);
    /* Answers are counted before they leave: a client that reads the counters right
       after its answer arrives sees it counted. */
    for (int i = 0; i < nout; i++) {
      int t = tidx[i] < NT ? tidx[i] : NT - 1;
      int r = rc[i] < NR ? rc[i] : NR - 1;
      bump(&w->c.hits[w->v6][t][r]);
    }
    int sent = 0;
    while (sent < nout) {
      int k = sendmmsg(w->fd, out + sent, nout - sent, 0);
      if (k < 0) {
        if (errno == EINTR) continue;
        sent++; /* this datagram cannot be sent (e.g. the buffer is full): skip it */
        continue;
      }
      sent += k;
    }
    if (nout) {
      struct timespec now;
      clock_gettime(CLOCK_REALTIME, &now);
      uint64_t lsum = 0;
      for (int i = 0; i < nout; i++) {
        if (!rx_out[i].tv_sec) continue;
        int64_t ns = (int64_t)(now.tv_sec - rx_out[i].tv_sec) * 1000000000LL + (now.tv_nsec - rx_out[i].tv_nsec);
        if (ns < 0) ns = 0;
        bump(&w->c.lat[lat_bucket((uint64_t)ns)]);
        lsum += (uint64_t)ns;
      }
      __atomic_store_n(&w->c.lat_sum_ns, __atomic_load_n(&w->c.lat_sum_ns, __ATOMIC_RELAXED) + lsum, __ATOMIC_RELAXED);
      clock_gettime(CLOCK_MONOTONIC, &t1);
      /* The batch's handling time, shared equally by its answers. */
      double each = ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9) / nout;
      int b = 0;
      double bound = 0.00025;
      while (b < NB && each > bound) { b++; bound *= 2; }
      for (int i = 0; i < nout; i++) {
        int t = tidx[i] < NT ? tidx[i] : NT - 1;
        if (b < NB) bump(&w->c.buckets[t][b]);
        uint64_t *sp = &w->c.sums_ns[t];
        __atomic_store_n(sp, __atomic_load_n(sp, __ATOMIC_RELAXED) + (uint64_t)(each * 1e9), __ATOMIC_RELAXED);
      }
    }
  }
done:
  free(in); free(out); free(iin); free(iout); free(addr); free(rbuf); free(obuf); free(ctl);
  return NULL;
}

/* ---- JS side ---------------------------------------------------------------------- */

static void unref(server *s) {
  pthread_mutex_lock(&s->refLock);
  int left = --s->refs;
  pthread_mutex_unlock(&s->refLock);
  if (left) return;
  free(s->workers);
  free(s->sets);
  pthread_rwlock_destroy(&s->lock);
  pthread_mutex_destroy(&s->refLock);
  free(s);
}

static void clear_locked(server *s) {
  size_t n = (size_t)s->nsets * WAYS;
  for (size_t i = 0; i < n; i++) {
    free(s->sets[i]);
    s->sets[i] = NULL;
  }
  s->entries = 0;
  s->bytes = 0;
}

static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  miss_item *it = data;
  server *s = ctx;
  if (env && cb && !s->stopped) {
    napi_value argv[3], undef;
    void *p;
    napi_create_int32(env, it->worker, &argv[0]);
    napi_create_buffer_copy(env, it->len, it->data, &p, &argv[1]);
    napi_create_buffer_copy(env, it->alen, &it->addr, &p, &argv[2]);
    napi_get_undefined(env, &undef);
    napi_call_function(env, undef, cb, 3, argv, NULL);
  }
  free(it);
}

static void tsfn_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  unref(data);
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  unref(data);
}

static server *get_server(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    *len = sizeof *a6;
    return AF_INET6;
  }
  return -1;
}

static napi_value bind_common(napi_env env, napi_callback_info info, int tcp) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char host[64];
  size_t hl;
  int32_t port;
  bool v6only = false;
  if (argc < 2 || napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hl) != napi_ok ||
      napi_get_value_int32(env, argv[1], &port) != napi_ok || port < 0 || port > 65535)
    return type_error(env, tcp ? "bindTcp(host, port, v6only)" : "bindUdp(host, port, v6only)");
  if (argc > 2) napi_get_value_bool(env, argv[2], &v6only);
  bool reuseport = true;
  if (argc > 3) napi_get_value_bool(env, argv[3], &reuseport);
  struct sockaddr_storage ss;
  socklen_t sl;
  int fam = parse_addr(host, port, &ss, &sl);
  if (fam < 0) return throw_errno(env, "bind: not an IP address", EINVAL);
  int fd = socket(fam, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  if (fam == AF_INET6) {
    int v = v6only ? 1 : 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof v);
  }
  if (tcp) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  } else {
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    int sz = 4 * 1024 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    struct timeval tv = {0, 200000}; /* wake up to notice stop() even if shutdown() did not */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  if (tcp && listen(fd, 1024) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "listen", e);
  }
  napi_value r;
  napi_create_int32(env, fd, &r);
  return r;
}

static napi_value js_bind_udp(napi_env env, napi_callback_info info) { return bind_common(env, info, 0); }
static napi_value js_bind_tcp(napi_env env, napi_callback_info info) { return bind_common(env, info, 1); }

static napi_value js_local_port(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) return type_error(env, "localPort(fd)");
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return throw_errno(env, "getsockname", errno);
  int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  napi_value r;
  napi_create_int32(env, port, &r);
  return r;
}

static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok) return type_error(env, "closeFd(fd)");
  close(fd);
  return NULL;
}

static napi_value js_cpu_count(napi_env env, napi_callback_info info) {
  (void)info;
  cpu_set_t set;
  int n = 1;
  if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  napi_value r;
  napi_create_int32(env, n < 1 ? 1 : n, &r);
  return r;
}

static napi_value js_start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t nfd = 0, nfam = 0;
  int32_t maxUdp, maxEntries;
  int64_t maxBytes;
  napi_valuetype cbt;
  if (argc < 6 || napi_get_array_length(env, argv[0], &nfd) != napi_ok || napi_get_array_length(env, argv[1], &nfam) != napi_ok ||
      nfd == 0 || nfd > MAX_WORKERS || nfam != nfd ||
      napi_get_value_int32(env, argv[2], &maxUdp) != napi_ok || napi_get_value_int32(env, argv[3], &maxEntries) != napi_ok ||
      napi_get_value_int64(env, argv[4], &maxBytes) != napi_ok || napi_typeof(env, argv[5], &cbt) != napi_ok || cbt != napi_function)
    return type_error(env, "start(fds, v6flags, maxUdp, maxEntries, maxBytes, onMiss)");
  server *s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, "start", ENOMEM);
  s->maxUdp = maxUdp < 512 ? 512 : maxUdp;
  for (int i = 0; i < NL; i++) lat_bounds[i] = (uint64_t)(LAT_BASE_NS * pow(2.0, i / 4.0));
  s->nsets = (uint32_t)((maxEntries < WAYS ? WAYS : maxEntries) / WAYS);
  s->maxBytes = (size_t)(maxBytes < 0 ? 0 : maxBytes);
  s->sets = calloc((size_t)s->nsets * WAYS, sizeof(entry *));
  s->workers = calloc(nfd, sizeof(worker));
  if (!s->sets || !s->workers) { free(s->sets); free(s->workers); free(s); return throw_errno(env, "start", ENOMEM); }
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&s->lock, &ra);
  pthread_mutex_init(&s->refLock, NULL);
  s->nworkers = (int)nfd;
  s->refs = 2;
  for (uint32_t i = 0; i < nfd; i++) {
    napi_value v;
    int32_t fd, fam;
    napi_get_element(env, argv[0], i, &v);
    napi_get_value_int32(env, v, &fd);
    napi_get_element(env, argv[1], i, &v);
    napi_get_value_int32(env, v, &fam);
    s->workers[i].srv = s;
    s->workers[i].index = (int)i;
    s->workers[i].fd = fd;
    s->workers[i].v6 = fam ? 1 : 0;
  }
  napi_value name;
  napi_create_string_utf8(env, "skiff-dns-miss", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[5], NULL, name, MISS_QUEUE, 1, s, tsfn_finalize, s, call_js, &s->tsfn) != napi_ok) {
    s->refs = 1;
    unref(s);
    return throw_errno(env, "napi_create_threadsafe_function", EINVAL);
  }
  for (int i = 0; i < s->nworkers; i++) {
    if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]) == 0) {
      s->workers[i].started = 1;
      char tn[16];
      snprintf(tn, sizeof tn, "skiff-dns-%d", i & 0xff);
      pthread_setname_np(s->workers[i].thread, tn); /* visible in /proc/PID/task/TID/comm */
    }
  }
  napi_value h;
  napi_create_external(env, s, handle_finalize, NULL, &h);
  return h;
}

static napi_value js_send(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  server *s = argc >= 4 ? get_server(env, argv[0]) : NULL;
  int32_t wi;
  void *addr, *data;
  size_t alen, dlen;
  if (!s || napi_get_value_int32(env, argv[1], &wi) != napi_ok || napi_get_buffer_info(env, argv[2], &addr, &alen) != napi_ok ||
      napi_get_buffer_info(env, argv[3], &data, &dlen) != napi_ok)
    return type_error(env, "send(handle, worker, addr, data)");
  napi_value r;
  bool ok = false;
  if (!s->stopped && wi >= 0 && wi < s->nworkers && alen <= sizeof(struct sockaddr_storage)) {
    ok = sendto(s->workers[wi].fd, data, dlen, MSG_DONTWAIT, (struct sockaddr *)addr, (socklen_t)alen) >= 0;
  }
  napi_get_boolean(env, ok, &r);
  return r;
}

static napi_value js_put(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  server *s = argc >= 5 ? get_server(env, argv[0]) : NULL;
  void *qv, *rv;
  size_t qlen, rlen;
  int32_t tidx, rcode;
  if (!s || napi_get_buffer_info(env, argv[1], &qv, &qlen) != napi_ok || napi_get_buffer_info(env, argv[2], &rv, &rlen) != napi_ok ||
      napi_get_value_int32(env, argv[3], &tidx) != napi_ok || napi_get_value_int32(env, argv[4], &rcode) != napi_ok)
    return type_error(env, "put(handle, query, response, typeIndex, rcode)");
  napi_value r;
  uint8_t key[KEY_MAX];
  int qnlen;
  int klen = s->stopped || rlen > PKT ? -1 : make_key(s->maxUdp, qv, (uint32_t)qlen, key, &qnlen);
  if (klen < 0 || rlen < (size_t)(12 + qnlen + 4)) {
    napi_get_boolean(env, false, &r);
    return r;
  }
  size_t sz = sizeof(entry) + klen + rlen;
  entry *e = malloc(sz);
  if (!e) { napi_get_boolean(env, false, &r); return r; }
  e->hash = hash_bytes(key, klen);
  e->klen = (uint16_t)klen;
  e->rlen = (uint16_t)rlen;
  e->tidx = (uint8_t)(tidx < 0 ? NT - 1 : tidx >= NT ? NT - 1 : tidx);
  e->rcode = (uint8_t)(rcode < 0 || rcode >= NR ? NR - 1 : rcode);
  memcpy(e->data, key, klen);
  memcpy(e->data + klen, rv, rlen);
  bool stored = false;
  pthread_rwlock_wrlock(&s->lock);
  entry **set = s->sets + (size_t)(e->hash % s->nsets) * WAYS;
  int slot = -1;
  for (int w = 0; w < WAYS; w++) {
    entry *x = set[w];
    if (x && x->hash == e->hash && x->klen == klen && memcmp(x->data, key, klen) == 0) { slot = w; break; }
  }
  if (slot < 0) for (int w = 0; w < WAYS; w++) if (!set[w]) { slot = w; break; }
  if (slot < 0) slot = (int)(s->rr++ % WAYS);
  entry *old = set[slot];
  size_t oldsz = old ? sizeof(entry) + old->klen + old->rlen : 0;
  if (s->bytes - oldsz + sz <= s->maxBytes) {
    set[slot] = e;
    s->bytes = s->bytes - oldsz + sz;
    if (!old) s->entries++;
    free(old);
    stored = true;
  }
  pthread_rwlock_unlock(&s->lock);
  if (!stored) free(e);
  napi_get_boolean(env, stored, &r);
  return r;
}

static napi_value js_clear(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  server *s = argc >= 1 ? get_server(env, argv[0]) : NULL;
  if (!s) return type_error(env, "clear(handle)");
  pthread_rwlock_wrlock(&s->lock);
  clear_locked(s);
  pthread_rwlock_unlock(&s->lock);
  return NULL;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  server *s = argc >= 1 ? get_server(env, argv[0]) : NULL;
  if (!s) return type_error(env, "stats(handle)");
  napi_value ab, arr;
  double *d;
  napi_create_arraybuffer(env, ST_LEN * sizeof(double), (void **)&d, &ab);
  memset(d, 0, ST_LEN * sizeof(double));
  /* Deltas since the previous call: each worker's counters only grow; `last` remembers what was reported. */
#define DELTA(field) ({ uint64_t now_ = __atomic_load_n(&w->c.field, __ATOMIC_RELAXED); uint64_t d_ = now_ - w->last.field; w->last.field = now_; (double)d_; })
  for (int i = 0; i < s->nworkers; i++) {
    worker *w = &s->workers[i];
    for (int f = 0; f < 2; f++)
      for (int t = 0; t < NT; t++)
        for (int r = 0; r < NR; r++) d[ST_HITS + (f * NT + t) * NR + r] += DELTA(hits[f][t][r]);
    for (int t = 0; t < NT; t++) {
      d[ST_SUMS + t] += DELTA(sums_ns[t]) / 1e9;
      for (int b = 0; b < NB; b++) d[ST_BUCKETS + t * NB + b] += DELTA(buckets[t][b]);
    }
    d[ST_MISSES] += DELTA(misses);
    d[ST_DROPS] += DELTA(drops);
    for (int b = 0; b <= NL; b++) d[ST_LAT + b] += DELTA(lat[b]);
    d[ST_LATSUM] += DELTA(lat_sum_ns) / 1e9;
  }
#undef DELTA
  d[ST_ENTRIES] = (double)s->entries;
  d[ST_BYTES] = (double)s->bytes;
  napi_create_typedarray(env, napi_float64_array, ST_LEN, ab, 0, &arr);
  return arr;
}

static napi_value js_stop(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  server *s = argc >= 1 ? get_server(env, argv[0]) : NULL;
  if (!s) return type_error(env, "stop(handle)");
  if (s->stopped) return NULL;
  s->stopping = 1;
  for (int i = 0; i < s->nworkers; i++) shutdown(s->workers[i].fd, SHUT_RDWR);
  for (int i = 0; i < s->nworkers; i++)
    if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
  s->stopped = 1;
  for (int i = 0; i < s->nworkers; i++) {
    int dup = 0; /* workers may share one socket: close each fd once */
    for (int j = 0; j < i; j++) if (s->workers[j].fd == s->workers[i].fd) dup = 1;
    if (!dup) close(s->workers[i].fd);
  }
  pthread_rwlock_wrlock(&s->lock);
  clear_locked(s);
  pthread_rwlock_unlock(&s->lock);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_release);
  return NULL;
}

static napi_value js_constants(napi_env env) {
  napi_value o, v;
  napi_create_object(env, &o);
#define C(n, x) napi_create_int32(env, x, &v); napi_set_named_property(env, o, n, v);
  C("NT", NT) C("NR", NR) C("NB", NB) C("HITS", ST_HITS) C("SUMS", ST_SUMS) C("BUCKETS", ST_BUCKETS)
  C("MISSES", ST_MISSES) C("DROPS", ST_DROPS) C("ENTRIES", ST_ENTRIES) C("BYTES", ST_BYTES) C("LEN", ST_LEN) C("PKT", PKT)
  C("NL", NL) C("LAT", ST_LAT) C("LATSUM", ST_LATSUM) C("LAT_BASE_NS", (int)LAT_BASE_NS)
#undef C
  return o;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    {"bindUdp", NULL, js_bind_udp, NULL, NULL, NULL, napi_default, NULL},
    {"bindTcp", NULL, js_bind_tcp, NULL, NULL, NULL, napi_default, NULL},
    {"localPort", NULL, js_local_port, NULL, NULL, NULL, napi_default, NULL},
    {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_default, NULL},
    {"cpuCount", NULL, js_cpu_count, NULL, NULL, NULL, napi_default, NULL},
    {"start", NULL, js_start, NULL, NULL, NULL, napi_default, NULL},
    {"send", NULL, js_send, NULL, NULL, NULL, napi_default, NULL},
    {"put", NULL, js_put, NULL, NULL, NULL, napi_default, NULL},
    {"clear", NULL, js_clear, NULL, NULL, NULL, napi_default, NULL},
    {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  napi_set_named_property(env, exports, "constants", js_constants(env));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
