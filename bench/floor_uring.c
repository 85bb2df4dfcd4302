/*
 * floor_uring: floor_relay.c's transparent relay on io_uring instead of epoll, to
 * measure what batching the syscalls could save on this machine.
 *
 * Every accepted client gets its own connection to the backend and bytes are
 * copied both ways untouched, as in floor_relay. Each end always has exactly one
 * operation in the ring: a recv into its own buffer, then a send of what came
 * to the peer, then the next recv. The loop hands all the operations queued
 * while it handled a batch of completions to the kernel, and waits for the next
 * completion, in one io_uring_enter: with many busy clients that is one syscall
 * for many reads and writes, where an epoll relay pays one each.
 * No SQPOLL (a kernel thread spinning on the ring would spend the other core).
 *
 *   floor_uring LISTEN_PORT BACKEND_PORT      (both on 127.0.0.1)
 *
 * The backend connect is blocking, as in floor_relay; fine for a benchmark.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_common.h"

enum { kEntries = 4096, kChunk = 16384 };

struct end {
  int fd;
  int closing;       /* the pair is being torn down: start no new operation */
  int pending;       /* operations of this end still in the ring */
  struct end *peer;
  size_t sent, size; /* of the chunk being sent to the peer */
  char buffer[kChunk];
};

/* user_data: an end pointer with the operation in the low bits (ends are 8-aligned). */
enum { kAccept = 1, kRecv = 2, kSend = 3 };

static struct io_uring ring;
static int listener;

static struct io_uring_sqe *sqe(void) {
  struct io_uring_sqe *s = io_uring_get_sqe(&ring);
  if (s == NULL) {  /* submission queue full: hand it over and take a fresh one */
    io_uring_submit(&ring);
    s = io_uring_get_sqe(&ring);
  }
  return s;
}

static void start_accept(void) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_accept(s, listener, NULL, NULL, 0);
  io_uring_sqe_set_data64(s, kAccept);
}

static void start_recv(struct end *e) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_recv(s, e->fd, e->buffer, kChunk, 0);
  io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)e | kRecv);
  ++e->pending;
}

static void start_send(struct end *e) {
  struct io_uring_sqe *s = sqe();
  io_uring_prep_send(s, e->peer->fd, e->buffer + e->sent, e->size - e->sent, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(s, (uint64_t)(uintptr_t)e | kSend);
  ++e->pending;
}

/* Shut both sockets down so that the other end's recv completes too; free the
 * pair once neither end has an operation left in the ring. */
static void tear_down(struct end *e) {
  if (!e->closing) {
    e->closing = e->peer->closing = 1;
    shutdown(e->fd, SHUT_RDWR);
    shutdown(e->peer->fd, SHUT_RDWR);
  }
  if (e->pending == 0 && e->peer->pending == 0) {
    close(e->fd);
    close(e->peer->fd);
    free(e->peer);
    free(e);
  }
}

static void accepted(int client, const struct sockaddr_in *backend) {
  int server = socket(AF_INET, SOCK_STREAM, 0);
  if (server < 0 || connect(server, (const struct sockaddr *)backend, sizeof *backend) != 0) {
    close(client);
    if (server >= 0) close(server);
    return;
  }
  no_delay(client);
  no_delay(server);
  struct end *c = calloc(1, sizeof *c), *s = calloc(1, sizeof *s);
  c->fd = client;
  c->peer = s;
  s->fd = server;
  s->peer = c;
  start_recv(c);
  start_recv(s);
}

int main(int argc, char **argv) {
  struct sockaddr_in backend;
  listener = listen_from_args(argc, argv, "floor_uring", &backend);
  if (listener < 0) return argc != 3 ? 2 : 1;
  int err = io_uring_queue_init(kEntries, &ring, 0);
  if (err < 0) {
    fprintf(stderr, "floor_uring: io_uring_queue_init: %s\n", strerror(-err));
    return 1;
  }
  start_accept();

  for (;;) {
    err = io_uring_submit_and_wait(&ring, 1);
    if (err < 0 && err != -EINTR) {
      fprintf(stderr, "floor_uring: io_uring_submit_and_wait: %s\n", strerror(-err));
      return 1;
    }
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      const uint64_t data = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      if (data == kAccept) {
        if (res >= 0) accepted(res, &backend);
        start_accept();
        continue;
      }
      struct end *e = (struct end *)(uintptr_t)(data & ~(uint64_t)7);
      --e->pending;
      if (e->closing) {
        tear_down(e);
        continue;
      }
      if ((data & 7) == kRecv) {
        if (res == -EINTR || res == -EAGAIN) {
          start_recv(e);
        } else if (res <= 0) {
          tear_down(e);
        } else {
          e->sent = 0;
          e->size = (size_t)res;
          start_send(e);
        }
      } else {
        if (res == -EINTR || res == -EAGAIN) {
          start_send(e);
        } else if (res <= 0) {
          tear_down(e);
        } else if ((e->sent += (size_t)res) < e->size) {
          start_send(e);
        } else {
          start_recv(e);
        }
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
}
