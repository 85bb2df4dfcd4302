/*
 * floor_relay: the least a TCP proxy can cost, as a yardstick for bench/compare.sh.
 *
 * A transparent relay: every accepted client gets its own connection to the
 * backend, and bytes are copied both ways untouched (so the client logs in to
 * PostgreSQL directly, through it). One thread, level-triggered epoll, one recv()
 * when a socket is readable and one send() per chunk, TCP_NODELAY both sides: the
 * syscall floor issue 3 names (one read and one write per direction per round
 * trip, plus epoll_wait). No pooling, no protocol parsing, no logging, no
 * timeouts: it is not a pooler, only the cost of being in the path.
 *
 *   floor_relay LISTEN_PORT BACKEND_PORT      (both on 127.0.0.1)
 *
 * A send that cannot take a whole chunk blocks that pair until the rest is out
 * (poll on that one socket); fine for a benchmark, wrong for a server.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_common.h"

enum { kMaxEvents = 256, kChunk = 16384 };

struct end {
  int fd;
  struct end *peer;
};

static char buffer[kChunk];

static int send_all(int fd, const char *data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n > 0) {
      data += n;
      size -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd p = {fd, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    return -1;
  }
  return 0;
}

static void close_pair(int epoll, struct end *e) {
  struct end *peer = e->peer;
  epoll_ctl(epoll, EPOLL_CTL_DEL, e->fd, NULL);
  epoll_ctl(epoll, EPOLL_CTL_DEL, peer->fd, NULL);
  close(e->fd);
  close(peer->fd);
  free(e);
  free(peer);
}

int main(int argc, char **argv) {
  struct sockaddr_in backend;
  int listener = listen_from_args(argc, argv, "floor_relay", &backend);
  if (listener < 0) return argc != 3 ? 2 : 1;
  int epoll = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};  /* NULL = the listener */
  epoll_ctl(epoll, EPOLL_CTL_ADD, listener, &ev);

  struct epoll_event events[kMaxEvents];
  for (;;) {
    int n = epoll_wait(epoll, events, kMaxEvents, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      perror("floor_relay: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      struct end *e = events[i].data.ptr;
      if (e == (struct end *)-1) continue;  /* its pair was closed earlier in this batch */
      if (e == NULL) {
        int client = accept(listener, NULL, NULL);
        if (client < 0) continue;
        int server = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(server, (struct sockaddr *)&backend, sizeof backend) != 0) {
          close(client);
          close(server);
          continue;
        }
        no_delay(client);
        no_delay(server);
        struct end *c = malloc(sizeof *c), *s = malloc(sizeof *s);
        c->fd = client;
        c->peer = s;
        s->fd = server;
        s->peer = c;
        struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c}, se = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(epoll, EPOLL_CTL_ADD, client, &ce);
        epoll_ctl(epoll, EPOLL_CTL_ADD, server, &se);
        continue;
      }
      ssize_t got = recv(e->fd, buffer, sizeof buffer, 0);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0 || send_all(e->peer->fd, buffer, (size_t)got) != 0) {
        struct end *peer = e->peer;
        close_pair(epoll, e);
        /* The pair may have another event in this batch: drop it. */
        for (int j = i + 1; j < n; ++j)
          if (events[j].data.ptr == e || events[j].data.ptr == peer) events[j].data.ptr = (void *)-1;
      }
    }
  }
}
