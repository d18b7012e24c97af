/* Raw WebSocket subscribers for bench/fanout.py: many sockets in one process.

   The subscribers share the hub's two cores, so they must cost as little as
   possible per frame, or the benchmark measures them instead of the server:
   Python subscribers took as much CPU as the hub did. This one opens COUNT
   sockets, upgrades and joins each (Phoenix `phx_join`, or socket.io's
   namespace connect), then walks frame headers in one epoll loop and counts
   frames; with LATENCY it also notes when each `slot_booked` arrived, keyed by
   its dentist and slot start.

   usage: subscriber HOST PORT PATH COUNT SECONDS LATENCY TOPICS|socket.io
     TOPICS: comma-separated; socket i joins topic i % n.
   stdout: {"ready":COUNT} once every socket has joined, then after SECONDS
     {"frames":N,"first":T,"last":T,"seen":[["dentist/start",T],...]}
     (T: Unix time in seconds, as Python's time.time()). */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH (1 << 20)

typedef struct {
    int fd;
    char *left;   /* bytes of an incomplete frame, kept for the next read */
    size_t nleft;
} Conn;

typedef struct {
    char key[96];
    double at;
} Seen;

static int socketio, latency;
static long frames;
static double first, last;
static Seen *seen;
static size_t nseen, capseen;
static char scratch[SCRATCH];

static void die(const char *what) {
    fprintf(stderr, "subscriber: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char *data, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) die("write");
        data += w;
        n -= (size_t)w;
    }
}

/* A client frame must be masked (RFC 6455 5.3). */
static void send_frame(int fd, int opcode, const char *payload, size_t n) {
    char frame[256];
    unsigned char mask[4];
    for (int i = 0; i < 4; i++) mask[i] = (unsigned char)rand();
    if (n > 125) n = 125;
    frame[0] = (char)(0x80 | opcode);
    frame[1] = (char)(0x80 | n);
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < n; i++) frame[6 + i] = (char)(payload[i] ^ mask[i % 4]);
    write_all(fd, frame, n + 6);
}

static void send_text(int fd, const char *text) { send_frame(fd, 0x1, text, strlen(text)); }

/* The string value of the first "name":"..." in a payload, into out. */
static int field(const char *p, size_t n, const char *name, char *out, size_t cap) {
    char pat[64];
    int k = snprintf(pat, sizeof pat, "\"%s\":\"", name);
    const char *at = memmem(p, n, pat, (size_t)k);
    if (!at) return 0;
    at += k;
    const char *end = memchr(at, '"', (size_t)(p + n - at));
    if (!end || (size_t)(end - at) >= cap) return 0;
    memcpy(out, at, (size_t)(end - at));
    out[end - at] = 0;
    return 1;
}

static void note(const char *p, size_t n, double at) {
    char dentist[48], start[48];
    if (!memmem(p, n, "\"slot_booked\"", 13)) return;
    if (!field(p, n, "dentist_id", dentist, sizeof dentist) || !field(p, n, "start", start, sizeof start)) return;
    if (nseen == capseen) {
        capseen = capseen ? capseen * 2 : 4096;
        seen = realloc(seen, capseen * sizeof *seen);
        if (!seen) die("realloc");
    }
    snprintf(seen[nseen].key, sizeof seen[nseen].key, "%s/%s", dentist, start);
    seen[nseen++].at = at;
}

static void count(double at) {
    frames++;
    last = at;
    if (first == 0) first = at;
}

/* Handle the complete frames in buf; returns the bytes used (the rest is an incomplete frame). */
static size_t frames_in(Conn *c, const char *buf, size_t n, double at) {
    size_t i = 0;
    while (i + 2 <= n) {
        const unsigned char *b = (const unsigned char *)buf + i;
        size_t len = b[1] & 0x7F, head = 2;
        if (len == 126) {
            if (i + 4 > n) break;
            len = (size_t)b[2] << 8 | b[3];
            head = 4;
        } else if (len == 127) {
            if (i + 10 > n) break;
            len = 0;
            for (int k = 2; k < 10; k++) len = len << 8 | b[k];
            head = 10;
        }
        if (i + head + len > n) break;
        const char *p = buf + i + head;
        int opcode = b[0] & 0x0F;
        i += head + len;
        if (opcode == 0x9) {
            send_frame(c->fd, 0xA, p, len);  /* ping -> pong */
        } else if (opcode == 0x8) {
            continue;                        /* close: the read that follows sees the end */
        } else if (socketio) {               /* engine.io: ping -> pong; count "42" events */
            if (len >= 1 && p[0] == '2') send_text(c->fd, "3");
            else if (len >= 2 && p[0] == '4' && p[1] == '2') count(at);
        } else {
            count(at);
            if (latency) note(p, len, at);
        }
    }
    return i;
}

/* Blocking read of one more chunk into c->left (set-up only). */
static void read_more(Conn *c) {
    c->left = realloc(c->left, c->nleft + 65536);
    if (!c->left) die("realloc");
    ssize_t r = read(c->fd, c->left + c->nleft, 65536);
    if (r <= 0) die("read during set-up");
    c->nleft += (size_t)r;
}

/* Blocking read of the next whole frame during set-up; returns its payload, or the first byte of it. */
static char next_frame(Conn *c) {
    for (;;) {
        if (c->nleft >= 2) {
            const unsigned char *b = (const unsigned char *)c->left;
            size_t len = b[1] & 0x7F, head = 2;
            if (len == 127) {
                fprintf(stderr, "subscriber: a set-up frame over 64 KiB\n");
                exit(1);
            }
            if (len == 126 && c->nleft >= 4) len = (size_t)b[2] << 8 | b[3], head = 4;
            if (len < 126 || head == 4) {
                if (c->nleft >= head + len) {
                    char kind = len ? c->left[head] : 0, second = len > 1 ? c->left[head + 1] : 0;
                    memmove(c->left, c->left + head + len, c->nleft - head - len);
                    c->nleft -= head + len;
                    return (char)(kind == '4' && second == '0' ? 'C' : kind);  /* 'C': socket.io connected */
                }
            }
        }
        read_more(c);
    }
}

static void open_one(Conn *c, const struct sockaddr_in *addr, const char *host, const char *path,
                     const char *topic) {
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0) die("connect");
    char request[4096];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host);
    write_all(c->fd, request, (size_t)n);
    char *end;
    while (!(c->nleft && (end = memmem(c->left, c->nleft, "\r\n\r\n", 4)))) read_more(c);
    if (strncmp(c->left, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "subscriber: upgrade refused: %.*s\n", (int)(end - c->left), c->left);
        exit(1);
    }
    c->nleft -= (size_t)(end + 4 - c->left);
    memmove(c->left, end + 4, c->nleft);
    if (socketio) {  /* open -> namespace connect -> connected */
        for (char kind; (kind = next_frame(c)) != 'C';) {
            if (kind == '0') send_text(c->fd, "40");
            else if (kind == '2') send_text(c->fd, "3");
        }
    } else {
        char join[512];
        snprintf(join, sizeof join, "[\"1\",\"1\",\"%s\",\"phx_join\",{\"config\":{}}]", topic);
        send_text(c->fd, join);
        next_frame(c);  /* the join reply, not counted */
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT PATH COUNT SECONDS LATENCY TOPICS|socket.io\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]), n = atoi(argv[4]);
    double seconds = atof(argv[5]);
    latency = atoi(argv[6]);
    socketio = strcmp(argv[7], "socket.io") == 0;
    srand((unsigned)getpid());

    char *topics[4096];
    int ntopics = 0;
    for (char *t = strtok(argv[7], ","); t && ntopics < 4096; t = strtok(NULL, ",")) topics[ntopics++] = t;

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "subscriber: HOST must be an IPv4 address\n");
        return 2;
    }
    char hostport[128];
    snprintf(hostport, sizeof hostport, "%s:%d", host, port);

    Conn *conns = calloc((size_t)n, sizeof *conns);
    int ep = epoll_create1(0);
    if (!conns || ep < 0) die("set-up");
    for (int i = 0; i < n; i++) {
        open_one(&conns[i], &addr, hostport, path, topics[i % ntopics]);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
    }
    /* Frames that came with the join reply count too. */
    double at = now();
    for (int i = 0; i < n; i++) {
        size_t used = frames_in(&conns[i], conns[i].left, conns[i].nleft, at);
        memmove(conns[i].left, conns[i].left + used, conns[i].nleft - used);
        conns[i].nleft -= used;
    }
    printf("{\"ready\":%d}\n", n);
    fflush(stdout);

    double deadline = now() + seconds;
    struct epoll_event events[256];
    for (double t; (t = now()) < deadline;) {
        int ready = epoll_wait(ep, events, 256, (int)((deadline - t) * 1000) + 1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) die("epoll_wait");
        for (int k = 0; k < ready; k++) {
            Conn *c = events[k].data.ptr;
            memcpy(scratch, c->left, c->nleft);  /* an incomplete frame from the last read goes first */
            ssize_t r = read(c->fd, scratch + c->nleft, SCRATCH - c->nleft);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {  /* the server closed it */
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            size_t have = c->nleft + (size_t)r, used = frames_in(c, scratch, have, now());
            if (have - used == SCRATCH) {
                fprintf(stderr, "subscriber: a frame larger than %d bytes\n", SCRATCH);
                return 1;
            }
            c->nleft = have - used;
            if (c->nleft) {
                c->left = realloc(c->left, c->nleft);
                if (!c->left) die("realloc");
                memcpy(c->left, scratch + used, c->nleft);
            }
        }
    }
    for (int i = 0; i < n; i++) close(conns[i].fd);

    printf("{\"frames\":%ld,\"first\":%.6f,\"last\":%.6f,\"seen\":[", frames, first, last);
    for (size_t i = 0; i < nseen; i++) printf("%s[\"%s\",%.6f]", i ? "," : "", seen[i].key, seen[i].at);
    printf("]}\n");
    return 0;
}
