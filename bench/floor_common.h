/*
 * What bench/floor_relay.c and bench/floor_uring.c share: the command line
 * (LISTEN_PORT BACKEND_PORT, both on 127.0.0.1), the listening socket and
 * TCP_NODELAY.
 */
#ifndef SLUICE_BENCH_FLOOR_COMMON_H
#define SLUICE_BENCH_FLOOR_COMMON_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static void no_delay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Parses the command line into the backend's address and returns a socket
 * listening on the listen port, or -1 after saying why. */
static int listen_from_args(int argc, char **argv, const char *name, struct sockaddr_in *backend) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT BACKEND_PORT\n", argv[0]);
    return -1;
  }
  struct sockaddr_in listen_at = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  *backend = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2]))};
  inet_pton(AF_INET, "127.0.0.1", &listen_at.sin_addr);
  inet_pton(AF_INET, "127.0.0.1", &backend->sin_addr);
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&listen_at, sizeof listen_at) != 0 || listen(listener, 4096) != 0) {
    fprintf(stderr, "%s: listen: ", name);
    perror(NULL);
    return -1;
  }
  return listener;
}

#endif
