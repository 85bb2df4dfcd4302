/* idle_clients: opens N PostgreSQL client connections (completed login), holds them idle,
 * and closes them when told to. Used by bench/compare.sh for the idleN scenarios.
 *
 *   idle_clients CONNINFO N TIMEOUT_S STALL_S [IN_FLIGHT]
 *
 * Connections are opened without blocking (PQconnectStart/PQconnectPoll with poll()), at most
 * IN_FLIGHT (default 64) logins at a time. The password comes from PGPASSWORD as usual.
 * With IDLE_CLIENTS_QUERY set in the environment, each connection then runs that query once
 * (one after another), so that the idle clients are ones that have done some work.
 * Once all N are CONNECTION_OK (and have run the query) it prints one line
 *     ready N <seconds>
 * to stdout and holds them until SIGTERM, SIGINT or SIGHUP, then closes them and exits 0.
 * It gives up (exit 1, a line starting with "failed" on stdout) when a connection fails, when
 * TIMEOUT_S seconds pass before all are logged in, or when no login completes for STALL_S
 * seconds (a proxy that queues logins behind a busy pool).
 *
 * Build: cc -O2 -o idle_clients idle_clients.c -I$(pg_config --includedir) -lpq
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum state { NOT_STARTED, CONNECTING, DONE };

struct client {
  PGconn* conn;
  enum state state;
  PostgresPollingStatusType want; /* what PQconnectPoll asked for last */
};

static void close_all(struct client* clients, int n) {
  for (int i = 0; i < n; ++i) {
    if (clients[i].conn != NULL) PQfinish(clients[i].conn);
    clients[i].conn = NULL;
  }
}

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    fprintf(stderr, "usage: %s CONNINFO N TIMEOUT_S STALL_S [IN_FLIGHT]\n", argv[0]);
    return 2;
  }
  const char* conninfo = argv[1];
  const int n = atoi(argv[2]);
  const double timeout_s = atof(argv[3]);
  const double stall_s = atof(argv[4]);
  const int max_in_flight = argc == 6 ? atoi(argv[5]) : 64;
  if (n <= 0 || timeout_s <= 0 || stall_s <= 0 || max_in_flight <= 0) {
    fprintf(stderr, "idle_clients: N, TIMEOUT_S, STALL_S and IN_FLIGHT must be positive\n");
    return 2;
  }

  /* One descriptor per connection, plus some. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 16) {
    printf("failed: the open file limit (%llu) is below %d connections\n", (unsigned long long)rl.rlim_cur, n);
    return 1;
  }

  /* Block the stop signals now; they are taken with sigwait once everything is connected, and
   * a signal during the logins ends the program through the check in the loop. */
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);

  struct client* clients = calloc((size_t)n, sizeof *clients);
  struct pollfd* pfds = calloc((size_t)max_in_flight, sizeof *pfds);
  int* pidx = calloc((size_t)max_in_flight, sizeof *pidx);
  if (clients == NULL || pfds == NULL || pidx == NULL) {
    printf("failed: out of memory\n");
    return 1;
  }

  const double start = now_s();
  double last_progress = start;
  int next = 0, in_flight = 0, done = 0;
  while (done < n) {
    /* Start new logins up to the in-flight limit. */
    while (next < n && in_flight < max_in_flight) {
      struct client* c = &clients[next];
      c->conn = PQconnectStart(conninfo);
      if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
        printf("failed: connection %d could not start: %s", next + 1,
               c->conn ? PQerrorMessage(c->conn) : "out of memory\n");
        printf("connected %d of %d\n", done, n);
        close_all(clients, n);
        return 1;
      }
      c->state = CONNECTING;
      c->want = PGRES_POLLING_WRITING; /* as the libpq documentation says to assume at first */
      ++next;
      ++in_flight;
    }

    int npfd = 0;
    for (int i = 0; i < next && npfd < max_in_flight; ++i) {
      if (clients[i].state != CONNECTING) continue;
      pfds[npfd].fd = PQsocket(clients[i].conn);
      pfds[npfd].events = clients[i].want == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      pfds[npfd].revents = 0;
      pidx[npfd] = i;
      ++npfd;
    }

    const double t = now_s();
    if (t - start > timeout_s) {
      printf("failed: timeout: %d of %d logged in after %.1f s\n", done, n, t - start);
      close_all(clients, n);
      return 1;
    }
    if (t - last_progress > stall_s) {
      printf("failed: stalled: %d of %d logged in, none in the last %.1f s\n", done, n, t - last_progress);
      close_all(clients, n);
      return 1;
    }
    sigset_t pending;
    if (sigpending(&pending) == 0 &&
        (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT) || sigismember(&pending, SIGHUP))) {
      printf("failed: interrupted: %d of %d logged in\n", done, n);
      close_all(clients, n);
      return 1;
    }

    const int ready = poll(pfds, (nfds_t)npfd, 200);
    if (ready < 0) {
      if (errno == EINTR) continue;
      printf("failed: poll: %s\n", strerror(errno));
      close_all(clients, n);
      return 1;
    }
    for (int k = 0; k < npfd && ready > 0; ++k) {
      if (pfds[k].revents == 0) continue;
      struct client* c = &clients[pidx[k]];
      c->want = PQconnectPoll(c->conn);
      if (c->want == PGRES_POLLING_OK) {
        c->state = DONE;
        --in_flight;
        ++done;
        last_progress = now_s();
      } else if (c->want == PGRES_POLLING_FAILED) {
        printf("failed: connection %d: %s", pidx[k] + 1, PQerrorMessage(c->conn));
        printf("connected %d of %d\n", done, n);
        close_all(clients, n);
        return 1;
      }
    }
  }

  /* IDLE_CLIENTS_QUERY: each connection runs it once before idling (clients that have worked). */
  const char* query = getenv("IDLE_CLIENTS_QUERY");
  if (query != NULL && *query != '\0') {
    for (int i = 0; i < n; ++i) {
      PGresult* result = PQexec(clients[i].conn, query);
      const ExecStatusType status = PQresultStatus(result);
      PQclear(result);
      if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
        printf("failed: connection %d: query: %s", i + 1, PQerrorMessage(clients[i].conn));
        close_all(clients, n);
        return 1;
      }
    }
  }

  printf("ready %d %.3f\n", n, now_s() - start);
  fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  close_all(clients, n);
  free(clients);
  free(pfds);
  free(pidx);
  return 0;
}
