// Tiny N-API addon: the few syscalls Node.js does not expose.
//   setns(fd, nstype)        enter a namespace (only the calling thread moves)
//   flock(fd, op)            BSD advisory lock; the kernel drops it when the holder dies
//   nsType(fd)               NS_GET_NSTYPE on an nsfs file, or -1 when fd is not a namespace
//   nlOpen(protocol)         a NETLINK_<protocol> socket (kernel-assigned port, extended acks,
//                            strict dump checking); returns the fd, closed with fs.closeSync
//   nlRequest(fd, msg)       sends one netlink request and reads, synchronously, every message
//                            the kernel answers with for its sequence number until the
//                            transaction ends (NLMSG_ERROR, i.e. an ack or an error;
//                            NLMSG_DONE after a dump; or the single reply of a plain GET);
//                            returns them as one Buffer for the caller to decode
//   nlBatch(fd, batch, marker) sends a whole nfnetlink batch (BATCH_BEGIN ... BATCH_END, any
//                            size: the socket's send buffer is forced large enough, so it stays
//                            ONE datagram and so one atomic kernel transaction), then the marker
//                            (a request answered exactly once, e.g. NFT_MSG_GETGEN), and returns
//                            every message the kernel queued up to and including the marker's
//                            answer: the batch's errors/acks come first, since netlink requests
//                            are processed synchronously inside sendmsg. A receive-queue overrun
//                            (too many errors to queue) is reported as an NLMSG_OVERRUN message.
//   nlBatchAsync(fd, batch, marker) the same on a libuv thread-pool thread; returns a Promise
//                            of the replies (the event loop keeps running meanwhile)
//   checksum(buffer)         FNV-1a 64 of the bytes, as 16 hex digits (the CNI loader's code
//                            cache integrity check: a JS loop over 150 KB costs ~5 ms at start-up)
//   socket(domain, type)     a new socket fd (close-on-exec) in the calling thread's network
//                            namespace: with setns, a TCP/UDP socket inside another namespace
// A CNI plugin is a short-lived process doing a dozen rtnetlink round trips: doing them
// synchronously here costs a few microseconds each and needs no event-loop machinery.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <stdlib.h>
#include <stdint.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/nsfs.h>
#include <node_api.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

static napi_value errno_error(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, c;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &c);
  napi_set_named_property(env, e, "errno", c);
  const char *code = err == ENOENT ? "ENOENT" : err == EINVAL ? "EINVAL" : err == EPERM ? "EPERM"
                   : err == EWOULDBLOCK ? "EWOULDBLOCK" : err == EBADF ? "EBADF" : err == ENOBUFS ? "ENOBUFS"
                   : err == EPROTO ? "EPROTO" : err == EMSGSIZE ? "EMSGSIZE" : "EOTHER";
  napi_value cs;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &cs);
  napi_set_named_property(env, e, "code", cs);
  return e;
}

/* Appends one netlink message (its aligned length, or what is left of the datagram,
 * `room`, if that is shorter) to a growable buffer. Returns -1 when out of memory. */
static int append_msg(char **out, size_t *outlen, size_t *outcap, const struct nlmsghdr *h, size_t room) {
  size_t ml = NLMSG_ALIGN(h->nlmsg_len);
  if (ml > room) ml = h->nlmsg_len;
  if (*outlen + ml > *outcap) {
    size_t cap = *outcap ? *outcap * 2 : 8192;
    while (cap < *outlen + ml) cap *= 2;
    char *no = realloc(*out, cap);
    if (!no) return -1;
    *out = no;
    *outcap = cap;
  }
  memcpy(*out + *outlen, h, ml);
  *outlen += ml;
  return 0;
}

static napi_value throw_errno(napi_env env, const char *what, int err) {
  napi_throw(env, errno_error(env, what, err));
  return NULL;
}

static int get_ints(napi_env env, napi_callback_info info, int32_t *out, size_t want) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) return -1;
  for (size_t i = 0; i < want; i++)
    if (napi_get_value_int32(env, argv[i], &out[i]) != napi_ok) return -1;
  return 0;
}

static napi_value js_setns(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (get_ints(env, info, a, 2)) { napi_throw_type_error(env, NULL, "setns(fd, nstype)"); return NULL; }
  if (setns(a[0], a[1]) != 0) return throw_errno(env, "setns", errno);
  return NULL;
}

static napi_value js_flock(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (get_ints(env, info, a, 2)) { napi_throw_type_error(env, NULL, "flock(fd, op)"); return NULL; }
  int r;
  do { r = flock(a[0], a[1]); } while (r != 0 && errno == EINTR);
  if (r != 0) return throw_errno(env, "flock", errno);
  return NULL;
}

static napi_value js_nstype(napi_env env, napi_callback_info info) {
  int32_t a[1];
  if (get_ints(env, info, a, 1)) { napi_throw_type_error(env, NULL, "nsType(fd)"); return NULL; }
  struct statfs st;
  int type = -1;
  if (fstatfs(a[0], &st) == 0 && st.f_type == NSFS_MAGIC) {
    int t = ioctl(a[0], NS_GET_NSTYPE);
    if (t >= 0) type = t;
  }
  napi_value v;
  napi_create_int32(env, type, &v);
  return v;
}

#ifndef NETLINK_CAP_ACK
#define NETLINK_CAP_ACK 10
#endif
#ifndef NETLINK_EXT_ACK
#define NETLINK_EXT_ACK 11
#endif
#ifndef NETLINK_GET_STRICT_CHK
#define NETLINK_GET_STRICT_CHK 12
#endif

static napi_value js_nl_open(napi_env env, napi_callback_info info) {
  int32_t a[1];
  if (get_ints(env, info, a, 1)) { napi_throw_type_error(env, NULL, "nlOpen(protocol)"); return NULL; }
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, a[0]);
  if (fd < 0) return throw_errno(env, "netlink socket", errno);
  struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "netlink bind", e);
  }
  int one = 1;
  // Best effort: older kernels lack them, and the codec works without them.
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  setsockopt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, &one, sizeof one);
  // A request never waits on the kernel for long (rtnl is synchronous), but a
  // wedged kernel must not hang the runtime's call forever.
  struct timeval tv = { .tv_sec = 30, .tv_usec = 0 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

static napi_value js_nl_request(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *req;
  size_t reqlen;
  bool isbuf = false;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_is_buffer(env, argv[1], &isbuf) != napi_ok || !isbuf ||
      napi_get_buffer_info(env, argv[1], &req, &reqlen) != napi_ok || reqlen < sizeof(struct nlmsghdr)) {
    napi_throw_type_error(env, NULL, "nlRequest(fd, buffer holding one netlink message)");
    return NULL;
  }
  struct nlmsghdr reqh;
  memcpy(&reqh, req, sizeof reqh);
  const int dump = (reqh.nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  const int acked = (reqh.nlmsg_flags & NLM_F_ACK) != 0;

  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  struct sockaddr_nl self;
  socklen_t slen = sizeof self;
  if (getsockname(fd, (struct sockaddr *)&self, &slen) != 0) return throw_errno(env, "netlink getsockname", errno);
  ssize_t n;
  do { n = sendto(fd, req, reqlen, 0, (struct sockaddr *)&kernel, sizeof kernel); } while (n < 0 && errno == EINTR);
  if (n < 0) return throw_errno(env, "netlink send", errno);

  char *out = NULL, *buf = NULL;
  size_t outlen = 0, outcap = 0, bufcap = 0;
  int done = 0, err = 0;
  const char *what = "netlink recv";
  while (!done) {
    // Peek the datagram's full size first, so no reply is ever truncated.
    do { n = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC); } while (n < 0 && errno == EINTR);
    if (n < 0) { err = errno == EAGAIN ? ETIMEDOUT : errno; break; }
    if ((size_t)n > bufcap) {
      char *nb = realloc(buf, n);
      if (!nb) { err = ENOMEM; break; }
      buf = nb;
      bufcap = n;
    }
    struct sockaddr_nl from;
    socklen_t flen = sizeof from;
    do { n = recvfrom(fd, buf, bufcap, 0, (struct sockaddr *)&from, &flen); } while (n < 0 && errno == EINTR);
    if (n < 0) { err = errno == EAGAIN ? ETIMEDOUT : errno; break; }
    if (from.nl_pid != 0) continue; // only the kernel answers requests
    size_t len = n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != reqh.nlmsg_seq || (h->nlmsg_pid != self.nl_pid && h->nlmsg_pid != 0)) continue;
      if (append_msg(&out, &outlen, &outcap, h, (char *)buf + n - (char *)h)) { err = ENOMEM; done = 1; break; }
      if (h->nlmsg_type == NLMSG_ERROR || h->nlmsg_type == NLMSG_DONE) { done = 1; break; }
      if (h->nlmsg_type == NLMSG_OVERRUN) { err = ENOBUFS; what = "netlink overrun"; done = 1; break; }
      if (!dump && !acked && !(h->nlmsg_flags & NLM_F_MULTI)) { done = 1; break; }
    }
  }
  free(buf);
  if (err) {
    free(out);
    return throw_errno(env, what, err);
  }
  napi_value result;
  void *data;
  napi_status st = napi_create_buffer_copy(env, outlen, outlen ? out : "", &data, &result);
  free(out);
  if (st != napi_ok) { napi_throw_error(env, NULL, "nlRequest: cannot allocate the reply buffer"); return NULL; }
  return result;
}

static int buffer_arg(napi_env env, napi_value v, void **data, size_t *len) {
  bool isbuf = false;
  return napi_is_buffer(env, v, &isbuf) == napi_ok && isbuf && napi_get_buffer_info(env, v, data, len) == napi_ok && *len >= sizeof(struct nlmsghdr) ? 0 : -1;
}

static int send_all(int fd, const void *buf, size_t len) {
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  ssize_t n;
  do { n = sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof kernel); } while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
}

/* The work of nlBatch, free of N-API calls so it can run on a thread-pool thread: sends
 * the batch and the marker, collects the replies into *out (malloc'ed). Returns 0 or an
 * errno, with *what naming the failing step. */
static int do_batch(int fd, const void *batch, size_t blen, const void *marker, size_t mlen, char **outp, size_t *outlenp, const char **what) {
  struct nlmsghdr mh;
  memcpy(&mh, marker, sizeof mh);
  // netlink_sendmsg refuses a datagram larger than the send buffer (less 32 bytes); the
  // kernel doubles the value given. SO_*BUFFORCE needs CAP_NET_ADMIN, which nf_tables needs anyway.
  int cur = 0;
  socklen_t cl = sizeof cur;
  getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &cl);
  if ((size_t)cur < blen + 4096) {
    size_t want = blen / 2 + 4096;
    int v = want > 0x3fffffff ? 0x3fffffff : (int)want;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) != 0) { *what = "netlink SO_SNDBUFFORCE"; return errno; }
  }
  // Errors are few unless the whole batch fails; room for many capped error messages.
  cur = 0;
  cl = sizeof cur;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &cl);
  if (cur < 16 << 20) {
    int v = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v);
  }
  int err = send_all(fd, batch, blen);
  if (err) { *what = "netlink send batch"; return err; }
  err = send_all(fd, marker, mlen);
  if (err) { *what = "netlink send marker"; return err; }

  char *out = NULL, *buf = NULL;
  size_t outlen = 0, outcap = 0, bufcap = 0;
  int done = 0;
  ssize_t n;
  *what = "netlink recv";
  while (!done) {
    do { n = recv(fd, NULL, 0, MSG_PEEK | MSG_TRUNC); } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == ENOBUFS) {
      // Replies were dropped: say so in the stream (the caller treats the batch as failed
      // if any error was read, and reports the overrun otherwise), and keep reading.
      struct nlmsghdr ov = { .nlmsg_len = sizeof ov, .nlmsg_type = NLMSG_OVERRUN };
      if (outlen + sizeof ov > outcap) {
        size_t cap = outcap ? outcap * 2 : 8192;
        while (cap < outlen + sizeof ov) cap *= 2;
        char *no = realloc(out, cap);
        if (!no) { err = ENOMEM; break; }
        out = no;
        outcap = cap;
      }
      memcpy(out + outlen, &ov, sizeof ov);
      outlen += sizeof ov;
      continue;
    }
    if (n < 0) { err = errno == EAGAIN ? ETIMEDOUT : errno; break; }
    if ((size_t)n > bufcap) {
      char *nb = realloc(buf, n);
      if (!nb) { err = ENOMEM; break; }
      buf = nb;
      bufcap = n;
    }
    struct sockaddr_nl from;
    socklen_t flen = sizeof from;
    do { n = recvfrom(fd, buf, bufcap, 0, (struct sockaddr *)&from, &flen); } while (n < 0 && errno == EINTR);
    if (n < 0) { err = errno == EAGAIN ? ETIMEDOUT : errno; break; }
    if (from.nl_pid != 0) continue;
    size_t len = n;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (append_msg(&out, &outlen, &outcap, h, (char *)buf + n - (char *)h)) { err = ENOMEM; done = 1; break; }
      if (h->nlmsg_seq == mh.nlmsg_seq) { done = 1; break; }
    }
  }
  free(buf);
  if (err) {
    free(out);
    return err;
  }
  *outp = out;
  *outlenp = outlen;
  return 0;
}

static napi_value js_nl_batch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  void *batch, *marker;
  size_t blen, mlen;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || buffer_arg(env, argv[1], &batch, &blen) || buffer_arg(env, argv[2], &marker, &mlen)) {
    napi_throw_type_error(env, NULL, "nlBatch(fd, batch buffer, marker request buffer)");
    return NULL;
  }
  char *out = NULL;
  size_t outlen = 0;
  const char *what = "netlink";
  int err = do_batch(fd, batch, blen, marker, mlen, &out, &outlen, &what);
  if (err) return throw_errno(env, what, err);
  napi_value result;
  void *data;
  napi_status st = napi_create_buffer_copy(env, outlen, outlen ? out : "", &data, &result);
  free(out);
  if (st != napi_ok) { napi_throw_error(env, NULL, "nlBatch: cannot allocate the reply buffer"); return NULL; }
  return result;
}

/* nlBatchAsync: the same on a libuv thread-pool thread (the kernel applies a full sync's
 * batch inside sendmsg, seconds for a big table: the event loop must not wait). The
 * buffers are kept alive by references until the work completes. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref batch_ref, marker_ref;
  int fd;
  void *batch, *marker;
  size_t blen, mlen;
  char *out;
  size_t outlen;
  int err;
  const char *what;
} batch_job;

static void batch_execute(napi_env env, void *data) {
  (void)env;
  batch_job *j = data;
  j->err = do_batch(j->fd, j->batch, j->blen, j->marker, j->mlen, &j->out, &j->outlen, &j->what);
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  batch_job *j = data;
  if (status != napi_ok && !j->err) { j->err = ECANCELED; j->what = "nlBatchAsync"; }
  if (j->err) napi_reject_deferred(env, j->deferred, errno_error(env, j->what, j->err));
  else {
    napi_value result;
    void *p;
    if (napi_create_buffer_copy(env, j->outlen, j->outlen ? j->out : "", &p, &result) == napi_ok) napi_resolve_deferred(env, j->deferred, result);
    else napi_reject_deferred(env, j->deferred, errno_error(env, "nlBatchAsync reply buffer", ENOMEM));
  }
  free(j->out);
  napi_delete_reference(env, j->batch_ref);
  napi_delete_reference(env, j->marker_ref);
  napi_delete_async_work(env, j->work);
  free(j);
}

static napi_value js_nl_batch_async(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  batch_job *j = calloc(1, sizeof *j);
  if (!j) return throw_errno(env, "nlBatchAsync", ENOMEM);
  if (argc < 3 || napi_get_value_int32(env, argv[0], &j->fd) != napi_ok || buffer_arg(env, argv[1], &j->batch, &j->blen) || buffer_arg(env, argv[2], &j->marker, &j->mlen)) {
    free(j);
    napi_throw_type_error(env, NULL, "nlBatchAsync(fd, batch buffer, marker request buffer)");
    return NULL;
  }
  napi_value promise, name;
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_reference(env, argv[1], 1, &j->batch_ref);
  napi_create_reference(env, argv[2], 1, &j->marker_ref);
  napi_create_string_utf8(env, "skiff:nlBatch", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, batch_execute, batch_complete, j, &j->work);
  napi_queue_async_work(env, j->work);
  return promise;
}

static napi_value js_checksum(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *data;
  size_t len;
  bool isbuf = false;
  if (argc < 1 || napi_is_buffer(env, argv[0], &isbuf) != napi_ok || !isbuf || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "checksum(buffer)");
    return NULL;
  }
  uint64_t h = 0xcbf29ce484222325ULL;
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  napi_value v;
  napi_create_string_latin1(env, hex, 16, &v);
  return v;
}

static napi_value js_socket(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (get_ints(env, info, a, 2)) { napi_throw_type_error(env, NULL, "socket(domain, type)"); return NULL; }
  int fd = socket(a[0], a[1] | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  napi_value v;
  napi_create_int32(env, fd, &v);
  return v;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
    {"setns", NULL, js_setns, NULL, NULL, NULL, napi_default, NULL},
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_default, NULL},
    {"nsType", NULL, js_nstype, NULL, NULL, NULL, napi_default, NULL},
    {"nlOpen", NULL, js_nl_open, NULL, NULL, NULL, napi_default, NULL},
    {"nlRequest", NULL, js_nl_request, NULL, NULL, NULL, napi_default, NULL},
    {"nlBatch", NULL, js_nl_batch, NULL, NULL, NULL, napi_default, NULL},
    {"nlBatchAsync", NULL, js_nl_batch_async, NULL, NULL, NULL, napi_default, NULL},
    {"checksum", NULL, js_checksum, NULL, NULL, NULL, napi_default, NULL},
    {"socket", NULL, js_socket, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
