// Tiny N-API addon: the few syscalls Node.js does not expose.
//   setns(fd, nstype)        enter a namespace (only the calling thread moves)
//   flock(fd, op)            BSD advisory lock; the kernel drops it when the holder dies
//   nsType(fd)               NS_GET_NSTYPE on an nsfs file, or -1 when fd is not a namespace
//   socket(domain, type)     a new socket fd (close-on-exec) in the calling thread's network
//                            namespace: with setns, a TCP/UDP socket inside another namespace
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <linux/nsfs.h>
#include <node_api.h>

#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value m, e, c;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_error(env, NULL, m, &e);
  napi_create_int32(env, err, &c);
  napi_set_named_property(env, e, "errno", c);
  const char *code = err == ENOENT ? "ENOENT" : err == EINVAL ? "EINVAL" : err == EPERM ? "EPERM"
                   : err == EWOULDBLOCK ? "EWOULDBLOCK" : err == EBADF ? "EBADF" : "EOTHER";
  napi_value cs;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &cs);
  napi_set_named_property(env, e, "code", cs);
  napi_throw(env, e);
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
    {"socket", NULL, js_socket, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
