/*
 * pause: the process that holds a pod sandbox's namespaces, like Kubernetes' own
 * (kubernetes/kubernetes build/pause/linux/pause.c). It runs as PID 1 of the sandbox, so it
 * must reap orphans re-parented to it and must install handlers for SIGTERM/SIGINT itself:
 * the kernel ignores default-action signals sent to a namespace's init.
 *
 * Build: gcc -static -Os -o pause pause.c
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "oxlet-3.10"

static void sigdown(int signo) {
  (void)signo;
  /* Only async-signal-safe calls here. */
  static const char msg[] = "pause: shutting down\n";
  ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)r;
  _exit(0);
}

static void sigreap(int signo) {
  (void)signo;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "-v") || !strcmp(argv[i], "--version")) {
      printf("pause.c %s\n", VERSION);
      return 0;
    }
  }

  if (getpid() != 1) {
    fprintf(stderr, "pause: warning: not running as PID 1\n");
  }

  struct sigaction down;
  memset(&down, 0, sizeof down);
  down.sa_handler = sigdown;
  sigemptyset(&down.sa_mask);
  if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0) {
    perror("pause: sigaction SIGINT/SIGTERM");
    return 1;
  }

  struct sigaction reap;
  memset(&reap, 0, sizeof reap);
  reap.sa_handler = sigreap;
  reap.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigemptyset(&reap.sa_mask);
  if (sigaction(SIGCHLD, &reap, NULL) < 0) {
    perror("pause: sigaction SIGCHLD");
    return 2;
  }

  for (;;) {
    pause();
  }
  fprintf(stderr, "pause: error: infinite loop terminated\n");
  return 42;
}
