// What a ZeroMQ message costs, apart from its bytes: the CPU (both sides,
// all threads, libzmq's I/O threads included) per 900-byte record sent from
// a ROUTER to a DEALER on loopback, one record a message (a type frame and
// a body frame, as feed protocol version 1's RECORD) against several records
// a message (version 2's RECORDS), with CURVE and without. The reason for
// RECORDS: docs/performance.md, "Department feed".
//
//   ninja -C build-bench bench/zmq-message-cost && build-bench/bench/zmq-message-cost
#include <zmq.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

void check(bool ok, const char* what) {
    if (!ok) throw std::runtime_error(std::string(what) + ": " + zmq_strerror(zmq_errno()));
}

// CPU µs per record for `records` records, `per_message` a message.
double run(int records, int per_message, bool curve) {
    void* ctx = zmq_ctx_new();
    void* server = zmq_socket(ctx, ZMQ_ROUTER);
    void* client = zmq_socket(ctx, ZMQ_DEALER);
    if (curve) {
        char spub[41], ssec[41], cpub[41], csec[41];
        check(zmq_curve_keypair(spub, ssec) == 0 && zmq_curve_keypair(cpub, csec) == 0, "zmq_curve_keypair");
        int one = 1;
        zmq_setsockopt(server, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(server, ZMQ_CURVE_SECRETKEY, ssec, 40);
        zmq_setsockopt(client, ZMQ_CURVE_SERVERKEY, spub, 40);
        zmq_setsockopt(client, ZMQ_CURVE_PUBLICKEY, cpub, 40);
        zmq_setsockopt(client, ZMQ_CURVE_SECRETKEY, csec, 40);
    }
    int unlimited = 0;
    zmq_setsockopt(server, ZMQ_SNDHWM, &unlimited, sizeof unlimited);
    zmq_setsockopt(client, ZMQ_RCVHWM, &unlimited, sizeof unlimited);
    check(zmq_bind(server, "tcp://127.0.0.1:*") == 0, "bind");
    char endpoint[256];
    size_t len = sizeof endpoint;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, endpoint, &len);
    check(zmq_connect(client, endpoint) == 0, "connect");
    zmq_send(client, "HELLO", 5, 0);
    char peer[256];
    int peer_len = zmq_recv(server, peer, sizeof peer, 0);
    char hello[16];
    zmq_recv(server, hello, sizeof hello, 0);
    check(peer_len > 0, "recv");

    const std::string record(900, 'x');
    std::string body;
    for (int k = 0; k < per_message; ++k) body += (k ? "," : "") + record;
    const int messages = records / per_message;
    const double c0 = cpu_seconds();
    std::thread reader([&] {
        zmq_msg_t m;
        zmq_msg_init(&m);
        for (int i = 0; i < messages; ++i) {
            zmq_msg_recv(&m, client, 0); // type
            zmq_msg_recv(&m, client, 0); // body
        }
        zmq_msg_close(&m);
    });
    for (int i = 0; i < messages; ++i) {
        zmq_send(server, peer, static_cast<size_t>(peer_len), ZMQ_SNDMORE);
        zmq_send(server, "RECORDS", 7, ZMQ_SNDMORE);
        zmq_send(server, body.data(), body.size(), 0);
    }
    reader.join();
    const double us = (cpu_seconds() - c0) / (messages * per_message) * 1e6;
    int zero = 0;
    zmq_setsockopt(server, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(client, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(server);
    zmq_close(client);
    zmq_ctx_term(ctx);
    return us;
}

} // namespace

int main() {
    const int records = 200'000;
    std::printf("CPU per 900-byte record, both sides, loopback (%d records):\n", records);
    std::printf("%-22s %10s %10s\n", "records a message", "CURVE", "plaintext");
    for (int per : {1, 4, 16, 64, 256})
        std::printf("%-22d %8.2f µs %8.2f µs\n", per, run(records, per, true), run(records, per, false));
}
