/*
 * echoserver: a small HTTP (and UDP) echo server for oxlet's tests, static and dependency-free.
 *
 * HTTP, on PORT (env) or --port (default 8080): every request gets 200 and a text/plain body
 *   hostname=<gethostname()>
 *   pod_ip=<POD_IP env if set, else the first non-loopback IPv4 address>
 *   client=<peer ip:port>
 *   method=<method>
 *   path=<request target>
 *   header.<name>=<value>        (one line per request header, in request order)
 * except /healthz ("ok") and /hostname (the hostname alone, like agnhost netexec).
 * One request per connection (Connection: close); a child process serves each connection.
 *
 * UDP, on --udp-port (off unless given): each datagram is answered like agnhost netexec's UDP
 * server: "hostname" -> hostname, "clientip" -> peer ip:port, "echo <text>" -> text, anything
 * else is echoed back verbatim. Answers come from the same socket, so conntrack sees one flow.
 *
 * Sockets listen dual-stack ([::] with IPV6_V6ONLY=0) and fall back to IPv4 when IPv6 is off.
 * No getaddrinfo or other NSS calls: they break or warn in static glibc binaries.
 * Exits 0 on SIGTERM/SIGINT (handlers are explicit: as PID 1, default actions are ignored).
 *
 * Build: gcc -static -Os -o echoserver echoserver.c
 */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "oxlet-echoserver 1"
#define MAX_REQUEST 16384
#define MAX_RESPONSE 32768

static volatile sig_atomic_t stop_signal;

static void on_stop(int signo) { stop_signal = signo; }

static void die(const char *what) {
  fprintf(stderr, "echoserver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int parse_port(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < 1 || v > 65535) {
    fprintf(stderr, "echoserver: invalid port %s\n", s);
    exit(64);
  }
  return (int)v;
}

/* Formats a socket address as "ip:port" ("[ip6]:port"), printing v4-mapped IPv6 as IPv4. */
static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    port = ntohs(sin->sin_port);
    snprintf(out, len, "%s:%d", ip, port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    port = ntohs(sin6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
      inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], ip, sizeof ip);
      snprintf(out, len, "%s:%d", ip, port);
    } else {
      inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
      snprintf(out, len, "[%s]:%d", ip, port);
    }
  } else {
    snprintf(out, len, "unknown");
  }
}

static void pod_ip(char *out, size_t len) {
  const char *env = getenv("POD_IP");
  if (env && *env) {
    snprintf(out, len, "%s", env);
    return;
  }
  snprintf(out, len, "unknown");
  struct ifaddrs *ifs;
  if (getifaddrs(&ifs) < 0) return;
  for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, len);
    break;
  }
  freeifaddrs(ifs);
}

/* Opens a listening (TCP) or bound (UDP) socket on all addresses, dual-stack if possible. */
static int open_socket(int type, int port) {
  int one = 1, zero = 0;
  int fd = socket(AF_INET6, type, 0);
  if (fd >= 0) {
    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    a6.sin6_addr = in6addr_any;
    a6.sin6_port = htons(port);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0) goto bound;
    close(fd);
  }
  /* IPv6 unavailable (disabled, or no address family): plain IPv4. */
  fd = socket(AF_INET, type, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a4;
  memset(&a4, 0, sizeof a4);
  a4.sin_family = AF_INET;
  a4.sin_addr.s_addr = htonl(INADDR_ANY);
  a4.sin_port = htons(port);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&a4, sizeof a4) < 0) die("bind");
bound:
  if (type == SOCK_STREAM && listen(fd, 128) < 0) die("listen");
  return fd;
}

struct buf {
  char data[MAX_RESPONSE];
  size_t len;
};

static void bprintf(struct buf *b, const char *fmt, ...) {
  if (b->len >= sizeof b->data) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->data + b->len, sizeof b->data - b->len, fmt, ap);
  va_end(ap);
  if (n > 0) b->len += (size_t)n;
  if (b->len > sizeof b->data) b->len = sizeof b->data;
}

static void write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    len -= (size_t)n;
  }
}

static void respond(int fd, int status, const char *reason, const char *body, size_t body_len) {
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                   status, reason, body_len);
  write_all(fd, head, (size_t)n);
  write_all(fd, body, body_len);
}

static void serve_http(int fd, const struct sockaddr_storage *peer) {
  static char req[MAX_REQUEST + 1];
  static struct buf body;
  size_t len = 0;
  char *end = NULL;
  struct timeval tv = {.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  while (len < MAX_REQUEST) {
    ssize_t n = read(fd, req + len, MAX_REQUEST - len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
    req[len] = '\0';
    if ((end = strstr(req, "\r\n\r\n")) != NULL) break;
  }
  if (!end) {
    if (len > 0) respond(fd, 400, "Bad Request", "bad request\n", 12);
    return;
  }
  *end = '\0';

  /* Request line: METHOD SP TARGET SP VERSION */
  char *line_end = strstr(req, "\r\n");
  if (line_end) *line_end = '\0';
  char *method = req;
  char *path = strchr(method, ' ');
  if (!path) {
    respond(fd, 400, "Bad Request", "bad request\n", 12);
    return;
  }
  *path++ = '\0';
  char *version = strchr(path, ' ');
  if (version) *version = '\0';

  char hostname[256] = "unknown";
  gethostname(hostname, sizeof hostname - 1);

  if (!strcmp(path, "/healthz")) {
    respond(fd, 200, "OK", "ok", 2);
    return;
  }
  if (!strcmp(path, "/hostname")) {
    respond(fd, 200, "OK", hostname, strlen(hostname));
    return;
  }

  char client[INET6_ADDRSTRLEN + 16], ip[INET6_ADDRSTRLEN + 1];
  format_addr(peer, client, sizeof client);
  pod_ip(ip, sizeof ip);
  body.len = 0;
  bprintf(&body, "hostname=%s\npod_ip=%s\nclient=%s\nmethod=%s\npath=%s\n", hostname, ip, client,
          method, path);
  for (char *h = line_end ? line_end + 2 : NULL; h && *h;) {
    char *next = strstr(h, "\r\n");
    if (next) *next = '\0';
    char *colon = strchr(h, ':');
    if (colon) {
      *colon = '\0';
      char *value = colon + 1;
      while (*value == ' ' || *value == '\t') value++;
      bprintf(&body, "header.%s=%s\n", h, value);
    }
    h = next ? next + 2 : NULL;
  }
  respond(fd, 200, "OK", body.data, body.len);
}

static void serve_udp(int fd) {
  char in[65536], out[65536 + 512];
  struct sockaddr_storage peer;
  socklen_t plen = sizeof peer;
  ssize_t n = recvfrom(fd, in, sizeof in - 1, 0, (struct sockaddr *)&peer, &plen);
  if (n < 0) return;
  in[n] = '\0';
  /* Trailing newlines come from `nc`/`echo`; ignore them when matching commands. */
  size_t cmd_len = (size_t)n;
  while (cmd_len > 0 && (in[cmd_len - 1] == '\n' || in[cmd_len - 1] == '\r')) cmd_len--;
  size_t out_len;
  if (cmd_len == 8 && !memcmp(in, "hostname", 8)) {
    gethostname(out, 255);
    out[255] = '\0';
    out_len = strlen(out);
  } else if (cmd_len == 8 && !memcmp(in, "clientip", 8)) {
    format_addr(&peer, out, sizeof out);
    out_len = strlen(out);
  } else if (cmd_len >= 5 && !memcmp(in, "echo ", 5)) {
    out_len = cmd_len - 5;
    memcpy(out, in + 5, out_len);
  } else {
    out_len = (size_t)n;
    memcpy(out, in, out_len);
  }
  sendto(fd, out, out_len, 0, (struct sockaddr *)&peer, plen);
}

int main(int argc, char **argv) {
  int port = 8080, udp_port = 0;
  const char *env_port = getenv("PORT");
  if (env_port && *env_port) port = parse_port(env_port);
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--port") && i + 1 < argc) {
      port = parse_port(argv[++i]);
    } else if (!strncmp(argv[i], "--port=", 7)) {
      port = parse_port(argv[i] + 7);
    } else if (!strcmp(argv[i], "--udp-port") && i + 1 < argc) {
      udp_port = parse_port(argv[++i]);
    } else if (!strncmp(argv[i], "--udp-port=", 11)) {
      udp_port = parse_port(argv[i] + 11);
    } else if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--version")) {
      printf("%s\n", VERSION);
      return 0;
    } else {
      fprintf(stderr, "usage: echoserver [--port N] [--udp-port N] [-v]\n");
      return 64;
    }
  }

  /* Children serve one connection each; ignoring SIGCHLD lets the kernel reap them (and any
   * orphan re-parented to us when we are a container's PID 1). */
  signal(SIGCHLD, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  /* Stop signals stay blocked except inside ppoll, so one arriving between the loop's check
   * and the wait cannot be lost. */
  sigset_t stop_set, wait_mask;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_set, &wait_mask);

  int tcp = open_socket(SOCK_STREAM, port);
  int udp = udp_port ? open_socket(SOCK_DGRAM, udp_port) : -1;
  fprintf(stderr, "echoserver: listening on tcp port %d", port);
  if (udp >= 0) fprintf(stderr, ", udp port %d", udp_port);
  fprintf(stderr, "\n");

  struct pollfd fds[2] = {{.fd = tcp, .events = POLLIN}, {.fd = udp, .events = POLLIN}};
  while (!stop_signal) {
    int n = ppoll(fds, udp >= 0 ? 2 : 1, NULL, &wait_mask);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (udp >= 0 && (fds[1].revents & POLLIN)) serve_udp(udp);
    if (fds[0].revents & POLLIN) {
      struct sockaddr_storage peer;
      socklen_t plen = sizeof peer;
      int c = accept(tcp, (struct sockaddr *)&peer, &plen);
      if (c < 0) continue;
      pid_t pid = fork();
      if (pid == 0) {
        sigprocmask(SIG_SETMASK, &wait_mask, NULL);
        close(tcp);
        if (udp >= 0) close(udp);
        serve_http(c, &peer);
        shutdown(c, SHUT_WR);
        close(c);
        _exit(0);
      }
      if (pid < 0) fprintf(stderr, "echoserver: fork: %s\n", strerror(errno));
      close(c);
    }
  }
  fprintf(stderr, "echoserver: got signal %d, exiting\n", (int)stop_signal);
  return 0;
}
