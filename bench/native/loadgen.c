/* The relay bench's load generator (bench/bench_relay.py, `make bench`), in C so that
 * it leaves the cores to the relay (issue 21 asks for one "light enough", wrk or
 * similar: wrk cannot bind each connection to its own source address, and the
 * relay's default limits are per address).
 *
 * CLIENTS clients, each a sender and a reader on raw keep-alive HTTP/1.1
 * connections to 127.0.0.1:PORT, the sender from 127.0.1.n and the reader from
 * 127.0.2.n (n = 1..CLIENTS). Sender n sends a ~200-byte package to mailbox
 * PREFIX-((n+1) mod CLIENTS), each with its own idempotency id, RATE times a
 * second on a fixed schedule (RATE 0: as fast as the relay answers, one request
 * at a time). Reader n long-polls PREFIX-n with `"wait": 1, "ack": true` from its
 * last ref. Counts sends answered 200 and messages delivered inside the window
 * [FROM, TO) (Unix times), and the errors by status (0: the connection failed;
 * after an error the client waits 0.1 s). Runs until TO, then prints one JSON
 * line: {"sent": N, "delivered": N, "errors": N, "statuses": {"STATUS": N, ...}}.
 *
 * usage: loadgen PORT CLIENTS PREFIX START FROM TO RATE TAG
 * (START: when the clients begin, Unix time; TAG: makes this run's ids unique).
 * One thread, epoll; Linux only, as the bench is. */
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

#define PACKAGE_TAIL 194 /* "T1RDMQ" + 194 x "A", as the Python generator sends */
#define BUF 65536

enum role { SENDER, READER };
enum state { WAITING, BUSY };

struct client {
    enum role role;
    int n, fd;
    enum state state;
    double due;        /* next send (paced senders), or the end of an error pause */
    long long seq;     /* the sender's next id */
    long long cursor;  /* the reader's last ref */
    char out[1024];
    size_t out_len, out_off;
    char *in;
    size_t in_len;
};

static int port, clients;
static const char *prefix, *tag;
static double start_at, from, to, rate;
static long long sent, delivered, errors;
static long long statuses[600];
static int epfd;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int open_conn(struct client *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.%d.%d", c->role == SENDER ? 1 : 2, c->n + 1);
    inet_pton(AF_INET, addr, &src.sin_addr);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        close(fd);
        return -1;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    c->fd = fd;
    return 0;
}

static void failed(struct client *c, int status) {
    errors++;
    if (status >= 0 && status < 600) statuses[status]++;
    if (status == 0 && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->state = WAITING;
    c->due = now() + 0.1;
}

static void request(struct client *c) {
    if (c->fd < 0 && open_conn(c) < 0) {
        failed(c, 0);
        return;
    }
    char body[512];
    int len;
    if (c->role == SENDER)
        len = snprintf(body, sizeof body, "{\"mailbox\": \"%s-%d\", \"contents\": \"T1RDMQ%.*s\", \"id\": \"%s-%d-%lld\"}",
                       prefix, (c->n + 1) % clients, PACKAGE_TAIL,
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                       tag, c->n, c->seq);
    else
        len = snprintf(body, sizeof body, "{\"mailboxes\": {\"%s-%d\": %lld}, \"wait\": 1, \"ack\": true}", prefix, c->n,
                       c->cursor);
    c->out_len = (size_t)snprintf(c->out, sizeof c->out,
                                  "POST %s HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                                  "Content-Length: %d\r\n\r\n%s",
                                  c->role == SENDER ? "/v1/send" : "/v1/receive", len, body);
    c->out_off = 0;
    c->in_len = 0;
    c->state = BUSY;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* The messages in a receive's answer: how many, and the last ref. */
static void count_messages(struct client *c, const char *body, size_t len) {
    long long count = 0;
    const char *p = body, *end = body + len;
    while ((p = memmem(p, (size_t)(end - p), "\"ref\":", 6)) != NULL) {
        p += 6;
        while (p < end && *p == ' ') p++;
        c->cursor = strtoll(p, NULL, 10);
        count++;
    }
    double t = now();
    if (t >= from && t < to) delivered += count;
}

/* A whole answer in c->in? Handle it and return 1. */
static int answer(struct client *c) {
    char *head_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!head_end) return 0;
    size_t head = (size_t)(head_end - c->in) + 4;
    char *cl = strcasestr(c->in, "content-length:");
    if (!cl || cl > head_end) {
        failed(c, 0);
        return 1;
    }
    size_t body = (size_t)strtoul(cl + 15, NULL, 10);
    if (c->in_len < head + body) return 0;
    int status = atoi(c->in + 9);
    c->state = WAITING;
    if (status != 200) {
        failed(c, status);
    } else if (c->role == SENDER) {
        double t = now();
        if (t >= from && t < to) sent++;
        c->seq++;
        if (rate <= 0) c->due = 0;
    } else {
        count_messages(c, c->in + head, body);
        c->due = 0;
    }
    c->in_len = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (c->fd >= 0) epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    return 1;
}

static void io(struct client *c, unsigned events) {
    if (c->fd < 0) return;
    if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
        failed(c, 0);
        return;
    }
    if ((events & EPOLLOUT) && c->state == BUSY && c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
            failed(c, 0);
            return;
        }
        if (w > 0) c->out_off += (size_t)w;
        if (c->out_off == c->out_len) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    if (events & EPOLLIN) {
        for (;;) {
            if (c->in_len == BUF) {
                failed(c, 0);
                return;
            }
            ssize_t r = recv(c->fd, c->in + c->in_len, BUF - c->in_len, 0);
            if (r > 0) {
                c->in_len += (size_t)r;
                c->in[c->in_len] = 0; /* for strcasestr */
                if (c->state == BUSY && answer(c)) return;
                continue;
            }
            if (r == 0 || errno != EAGAIN) failed(c, 0);
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: loadgen PORT CLIENTS PREFIX START FROM TO RATE TAG\n");
        return 2;
    }
    port = atoi(argv[1]);
    clients = atoi(argv[2]);
    prefix = argv[3];
    start_at = atof(argv[4]);
    from = atof(argv[5]);
    to = atof(argv[6]);
    rate = atof(argv[7]); /* per client */
    tag = argv[8];
    if (clients < 1 || clients > 250) {
        fprintf(stderr, "loadgen: CLIENTS must be 1 to 250\n");
        return 2;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct client *all = calloc((size_t)clients * 2, sizeof *all);
    for (int i = 0; i < clients * 2; i++) {
        all[i].role = i % 2 ? READER : SENDER;
        all[i].n = i / 2;
        all[i].fd = -1;
        all[i].in = malloc(BUF + 1);
        /* spread the paced senders' schedules over one period */
        all[i].due = start_at + (rate > 0 && all[i].role == SENDER ? (double)all[i].n / clients / rate : 0);
    }
    struct epoll_event events[512];
    for (;;) {
        double t = now();
        if (t >= to) break;
        double next = to;
        for (int i = 0; i < clients * 2; i++) {
            struct client *c = &all[i];
            if (c->state != WAITING) continue;
            if (c->due <= t) {
                if (c->role == SENDER && rate > 0) c->due += 1 / rate;
                request(c);
                if (c->state == WAITING && c->due < next) next = c->due;
            } else if (c->due < next) {
                next = c->due;
            }
        }
        double wait_ms = (next - now()) * 1000; /* rounded up: a paced sender's turn is not spun for */
        int timeout = wait_ms <= 0 ? 0 : wait_ms >= 100 ? 100 : (int)wait_ms + 1;
        int got = epoll_wait(epfd, events, 512, timeout);
        for (int i = 0; i < got; i++) io(events[i].data.ptr, events[i].events);
    }
    printf("{\"sent\": %lld, \"delivered\": %lld, \"errors\": %lld, \"statuses\": {", sent, delivered, errors);
    const char *sep = "";
    for (int s = 0; s < 600; s++)
        if (statuses[s]) {
            printf("%s\"%d\": %lld", sep, s, statuses[s]);
            sep = ", ";
        }
    printf("}}\n");
    return 0;
}
