/* The pod sandbox ("pause") program of the CRI test: holds the pod's namespaces until
 * it is told to stop, and reaps children it inherits (it is the pod's PID 1). Built with
 * `gcc -static` and packed as an OCI image by the test (the public pause image cannot be
 * pulled there). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction sa_stop = {0}, sa_reap = {0};
  sa_stop.sa_handler = stop;
  sa_reap.sa_handler = reap;
  sa_reap.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGINT, &sa_stop, NULL) != 0 || sigaction(SIGTERM, &sa_stop, NULL) != 0 ||
      sigaction(SIGCHLD, &sa_reap, NULL) != 0) {
    return 1;
  }
  for (;;) {
    pause();
  }
}
