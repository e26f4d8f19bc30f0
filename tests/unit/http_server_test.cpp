// HttpServer against real HTTP on loopback: Poco's client for well-formed requests, a raw
// socket where the request itself has to be malformed.

#include "http/server.hpp"

#include <catch2/catch.hpp>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/StreamCopier.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using switchboard::http::Request;
using switchboard::http::Response;
using switchboard::http::Server;

namespace {

struct LogCapture {
    std::mutex m;
    std::vector<std::pair<int, std::string>> lines;

    switchboard::http::LogFn fn() {
        return [this](int level, const std::string& msg) {
            std::lock_guard lock(m);
            lines.emplace_back(level, msg);
        };
    }
    bool contains(int level, const std::string& part) {
        std::lock_guard lock(m);
        for (auto& [l, s] : lines)
            if (l == level && s.find(part) != std::string::npos) return true;
        return false;
    }
    bool any_contains(const std::string& part) {
        std::lock_guard lock(m);
        for (auto& l : lines)
            if (l.second.find(part) != std::string::npos) return true;
        return false;
    }
};

Server::Options test_options() {
    Server::Options o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.timeout_ms = 2000;
    return o;
}

struct Reply {
    int status = 0;
    std::string body;
    std::string allow;
    std::string content_type;
};

// One request on a fresh connection. chunked: send the body with chunked encoding.
Reply send(std::uint16_t port, const std::string& method, const std::string& target,
           const std::string& body = "", bool chunked = false,
           std::vector<std::pair<std::string, std::string>> headers = {}) {
    Poco::Net::HTTPClientSession session("127.0.0.1", port);
    session.setTimeout(Poco::Timespan(5, 0));
    Poco::Net::HTTPRequest req(method, target, Poco::Net::HTTPMessage::HTTP_1_1);
    for (auto& [k, v] : headers) req.add(k, v);
    if (chunked)
        req.setChunkedTransferEncoding(true);
    else if (!body.empty() || method == "POST" || method == "PUT")
        req.setContentLength(static_cast<std::streamsize>(body.size()));
    std::ostream& os = session.sendRequest(req);
    os << body;
    Poco::Net::HTTPResponse resp;
    std::istream& is = session.receiveResponse(resp);
    Reply r;
    r.status = static_cast<int>(resp.getStatus());
    Poco::StreamCopier::copyToString(is, r.body);
    r.allow = resp.get("Allow", "");
    r.content_type = resp.getContentType();
    return r;
}

// Writes raw bytes and returns the status line the server answers with.
std::string raw_status_line(std::uint16_t port, const std::string& bytes) {
    Poco::Net::StreamSocket s(Poco::Net::SocketAddress("127.0.0.1", port));
    s.setReceiveTimeout(Poco::Timespan(3, 0));
    s.sendBytes(bytes.data(), static_cast<int>(bytes.size()));
    std::string got;
    char buf[1024];
    while (got.find("\r\n") == std::string::npos) {
        int n = s.receiveBytes(buf, sizeof buf);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
    }
    return got.substr(0, got.find("\r\n"));
}

// Bounded wait for a condition set by another thread.
template <typename Pred> bool eventually(Pred pred, std::chrono::milliseconds limit = 2000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(2ms);
    }
    return pred();
}

void echo_text(const std::string& text, Response& res) { res.respond(200, "text/plain", text); }

} // namespace

TEST_CASE("routes: exact match, longest prefix, 404, 405 with Allow") {
    LogCapture log;
    Server server(test_options(), log.fn());
    REQUIRE(server.add_route("GET", "/api", [](const Request&, Response& r) { echo_text("api", r); }, "a"));
    REQUIRE(server.add_route("GET", "/api/things", [](const Request& q, Response& r) { echo_text("things " + q.path, r); }, "b"));
    REQUIRE(server.add_route("POST", "/api/things", [](const Request&, Response& r) { echo_text("posted", r); }, "b"));
    REQUIRE(server.add_route("*", "/any", [](const Request& q, Response& r) { echo_text("any " + q.method, r); }, "c"));
    server.start();
    auto port = server.port();
    REQUIRE(port != 0);

    CHECK(send(port, "GET", "/api").body == "api");
    CHECK(send(port, "GET", "/api/other").body == "api");
    CHECK(send(port, "GET", "/api/things").body == "things /api/things");
    CHECK(send(port, "GET", "/api/things/42").body == "things /api/things/42");
    CHECK(send(port, "GET", "/api/things/").body == "things /api/things/");
    CHECK(send(port, "DELETE", "/any/x").body == "any DELETE");

    auto miss = send(port, "GET", "/apix");      // a prefix of the text, not of the path
    CHECK(miss.status == 404);
    CHECK(miss.body == R"({"error":"no such route"})");
    CHECK(miss.content_type == "application/json");
    CHECK(send(port, "GET", "/").status == 404);

    auto wrong = send(port, "DELETE", "/api/things/1");
    CHECK(wrong.status == 405);
    CHECK(wrong.allow == "GET, HEAD, POST");

    auto head = send(port, "HEAD", "/api");      // HEAD falls back to GET, without the body
    CHECK(head.status == 200);
    CHECK(head.body.empty());

    // The access log names method, path, status and duration, at debug level.
    CHECK(eventually([&] { return log.contains(1, "GET /api/things/42 -> 200 ("); }));
    CHECK(log.contains(1, "DELETE /api/things/1 -> 405 ("));
}

TEST_CASE("a root route catches everything the others do not") {
    Server server(test_options(), {});
    REQUIRE(server.add_route("GET", "/", [](const Request&, Response& r) { echo_text("root", r); }, "a"));
    REQUIRE(server.add_route("GET", "/x/", [](const Request&, Response& r) { echo_text("x", r); }, "a")); // trailing '/' ignored
    server.start();
    CHECK(send(server.port(), "GET", "/").body == "root");
    CHECK(send(server.port(), "GET", "/anything/else").body == "root");
    CHECK(send(server.port(), "GET", "/x").body == "x");
    CHECK(send(server.port(), "GET", "/x/y").body == "x");
}

TEST_CASE("request: body, query, headers, remote") {
    Server server(test_options(), {});
    Request seen;
    std::mutex m;
    REQUIRE(server.add_route("POST", "/echo", [&](const Request& q, Response& r) {
        {
            std::lock_guard lock(m);
            seen = q;
        }
        r.headers.emplace_back("X-Echo", "yes");
        r.respond(201, "application/octet-stream", q.body);
    }, "echo"));
    server.start();

    const char raw[] = "{\"name\":\"x\"}\r\n\0binary";
    std::string body(raw, sizeof raw - 1); // with a NUL inside
    auto r = send(server.port(), "POST", "/echo?a=1&b=two", body, false, {{"X-Custom-Thing", "Value"}});
    CHECK(r.status == 201);
    CHECK(r.body == body);
    CHECK(r.content_type == "application/octet-stream");

    auto last = [&] {
        std::lock_guard lock(m);
        return seen;
    };
    Request q = last();
    CHECK(q.method == "POST");
    CHECK(q.path == "/echo");
    CHECK(q.query == "a=1&b=two");
    REQUIRE(q.header("x-custom-thing"));
    CHECK(*q.header("X-CUSTOM-THING") == "Value");
    CHECK(*q.header("X-Custom-Thing") == "Value");
    CHECK(q.header("absent") == nullptr);
    bool lowered = true;
    for (auto& h : q.headers)
        for (char c : h.first) lowered = lowered && !(c >= 'A' && c <= 'Z');
    CHECK(lowered);
    CHECK(q.remote.rfind("127.0.0.1:", 0) == 0);

    // Chunked bodies arrive whole too, and a request without a query has "".
    auto c = send(server.port(), "POST", "/echo", std::string(50000, 'c'), true);
    CHECK(c.status == 201);
    CHECK(c.body == std::string(50000, 'c'));
    CHECK(last().query.empty());
}

TEST_CASE("413 for an oversized body, announced or chunked") {
    auto opts = test_options();
    opts.max_body = 1024;
    std::atomic<int> calls{0};
    Server server(opts, {});
    REQUIRE(server.add_route("POST", "/in", [&](const Request& q, Response& r) {
        ++calls;
        echo_text(std::to_string(q.body.size()), r);
    }, "in"));
    server.start();

    auto exact = send(server.port(), "POST", "/in", std::string(1024, 'a'));
    CHECK(exact.status == 200);
    CHECK(exact.body == "1024");

    auto big = send(server.port(), "POST", "/in", std::string(4096, 'a'));
    CHECK(big.status == 413);
    CHECK(big.body == R"({"error":"body too large","limit":1024})");

    auto chunked = send(server.port(), "POST", "/in", std::string(100000, 'b'), true);
    CHECK(chunked.status == 413);
    CHECK(chunked.body == R"({"error":"body too large","limit":1024})");

    auto small_chunked = send(server.port(), "POST", "/in", std::string(1000, 'b'), true);
    CHECK(small_chunked.status == 200);
    CHECK(small_chunked.body == "1000");
    CHECK(calls == 2);

    // A larger body than the socket buffers hold still gets its answer (the server reads and
    // discards the rest before closing, instead of resetting the connection).
    CHECK(send(server.port(), "POST", "/in", std::string(600000, 'a')).status == 413);

    // A huge announced length is refused from the headers alone, before any body is sent;
    // with "Expect: 100-continue" the client is told so instead of being invited to send it.
    auto line = raw_status_line(server.port(),
        "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n");
    CHECK(line.rfind("HTTP/1.1 413", 0) == 0);
    line = raw_status_line(server.port(),
        "POST /in HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n");
    CHECK(line.rfind("HTTP/1.1 413", 0) == 0);
}

TEST_CASE("malformed requests get 400") {
    Server server(test_options(), {});
    REQUIRE(server.add_route("POST", "/in", [](const Request&, Response& r) { echo_text("ok", r); }, "in"));
    server.start();
    auto port = server.port();
    CHECK(raw_status_line(port, "this is not http\r\n\r\n").find(" 400") != std::string::npos);
    CHECK(raw_status_line(port, "GET /a/../in HTTP/1.1\r\nHost: x\r\n\r\n").find(" 400") != std::string::npos);
    CHECK(raw_status_line(port, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
              .find(" 400") != std::string::npos);
    CHECK(raw_status_line(port, "POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                "3\r\nabc\r\n0\r\n\r\n")
              .find(" 400") != std::string::npos);
    CHECK(raw_status_line(port, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc")
              .find(" 400") != std::string::npos);
    CHECK(raw_status_line(port, "POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
              .find(" 400") != std::string::npos);
    // The server is still fine afterwards.
    CHECK(send(port, "POST", "/in", "x").body == "ok");
}

TEST_CASE("handler failures become 500 and are logged without request data") {
    LogCapture log;
    Server server(test_options(), log.fn());
    REQUIRE(server.add_route("POST", "/throw", [](const Request&, Response&) {
        throw std::runtime_error("bad record for Jane Citizen");
    }, "thrower"));
    REQUIRE(server.add_route("POST", "/silent", [](const Request&, Response&) {}, "silent"));
    REQUIRE(server.add_route("GET", "/int", [](const Request&, Response&) { throw 42; }, "thrower"));
    server.start();

    auto t = send(server.port(), "POST", "/throw?nino=QQ123456C", "SECRET-BODY", false, {{"Authorization", "Token SECRET-TOKEN"}});
    CHECK(t.status == 500);
    CHECK(t.body == R"({"error":"internal error"})");
    auto s = send(server.port(), "POST", "/silent", "x");
    CHECK(s.status == 500);
    CHECK(s.body == R"({"error":"internal error"})");
    CHECK(send(server.port(), "GET", "/int").status == 500);

    CHECK(eventually([&] { return log.contains(4, "POST /throw"); }));
    CHECK(log.contains(4, "thrower"));
    CHECK(log.contains(4, "POST /silent"));
    CHECK(log.contains(1, "POST /throw -> 500 ("));
    CHECK_FALSE(log.any_contains("SECRET"));
    CHECK_FALSE(log.any_contains("QQ123456C"));
    CHECK_FALSE(log.any_contains("Jane"));
}

TEST_CASE("remove_routes waits for a running handler of that owner") {
    Server server(test_options(), {});
    std::mutex m;
    std::condition_variable cv;
    bool entered = false, release = false;
    REQUIRE(server.add_route("GET", "/slow", [&](const Request&, Response& r) {
        std::unique_lock lock(m);
        entered = true;
        cv.notify_all();
        cv.wait_for(lock, 3s, [&] { return release; });
        echo_text("slow done", r);
    }, "plugin-a"));
    REQUIRE(server.add_route("GET", "/other", [](const Request&, Response& r) { echo_text("other", r); }, "plugin-b"));
    server.start();
    auto port = server.port();

    auto client = std::async(std::launch::async, [&] { return send(port, "GET", "/slow"); });
    {
        std::unique_lock lock(m);
        REQUIRE(cv.wait_for(lock, 2s, [&] { return entered; }));
    }
    std::atomic<bool> removed{false};
    auto remover = std::async(std::launch::async, [&] {
        server.remove_routes("plugin-a");
        removed = true;
    });
    std::this_thread::sleep_for(150ms);
    CHECK_FALSE(removed.load());              // still waiting for the handler
    CHECK(send(port, "GET", "/slow").status == 404); // but no new call starts
    CHECK(send(port, "GET", "/other").body == "other");
    {
        std::lock_guard lock(m);
        release = true;
    }
    cv.notify_all();
    REQUIRE(remover.wait_for(2s) == std::future_status::ready);
    CHECK(removed.load());
    auto r = client.get();
    CHECK(r.status == 200);
    CHECK(r.body == "slow done");
}

TEST_CASE("a handler may remove its own owner's routes without deadlock") {
    Server server(test_options(), {});
    REQUIRE(server.add_route("POST", "/once", [&](const Request&, Response& r) {
        server.remove_routes("self");
        echo_text("bye", r);
    }, "self"));
    server.start();
    auto first = std::async(std::launch::async, [&] { return send(server.port(), "POST", "/once", "x"); });
    REQUIRE(first.wait_for(2s) == std::future_status::ready);
    CHECK(first.get().body == "bye");
    CHECK(send(server.port(), "POST", "/once", "x").status == 404);
}

TEST_CASE("routes can be added while running; duplicates are refused") {
    LogCapture log;
    Server server(test_options(), log.fn());
    server.start();
    CHECK(send(server.port(), "GET", "/late").status == 404);
    CHECK(server.add_route("GET", "/late", [](const Request&, Response& r) { echo_text("1", r); }, "a"));
    CHECK_FALSE(server.add_route("GET", "/late", [](const Request&, Response& r) { echo_text("2", r); }, "b"));
    CHECK_FALSE(server.add_route("GET", "/late/", [](const Request&, Response& r) { echo_text("2", r); }, "b"));
    CHECK(server.add_route("POST", "/late", [](const Request&, Response& r) { echo_text("3", r); }, "b"));
    CHECK(send(server.port(), "GET", "/late").body == "1");
    CHECK(send(server.port(), "POST", "/late", "x").body == "3");
    CHECK(log.contains(3, "already registered by a"));

    // Invalid registrations are refused too, not thrown.
    CHECK_FALSE(server.add_route("get", "/x", [](const Request&, Response&) {}, "c"));
    CHECK_FALSE(server.add_route("GET", "x", [](const Request&, Response&) {}, "c"));
    CHECK_FALSE(server.add_route("GET", "/a/../b", [](const Request&, Response&) {}, "c"));
    CHECK_FALSE(server.add_route("GET", "/x", nullptr, "c"));
}

TEST_CASE("concurrent requests from several threads") {
    auto opts = test_options();
    opts.threads = 4;
    Server server(opts, {});
    std::atomic<int> running{0}, peak{0};
    REQUIRE(server.add_route("POST", "/echo", [&](const Request& q, Response& r) {
        int now = ++running;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {}
        std::this_thread::sleep_for(5ms);
        --running;
        echo_text(q.body, r);
    }, "echo"));
    server.start();

    constexpr int kThreads = 8, kEach = 10;
    std::vector<std::future<int>> clients;
    for (int t = 0; t < kThreads; ++t)
        clients.push_back(std::async(std::launch::async, [&, t] {
            int ok = 0;
            for (int i = 0; i < kEach; ++i) {
                std::string body = "client " + std::to_string(t) + " request " + std::to_string(i);
                auto r = send(server.port(), "POST", "/echo", body);
                if (r.status == 200 && r.body == body) ++ok;
            }
            return ok;
        }));
    int ok = 0;
    for (auto& c : clients) {
        REQUIRE(c.wait_for(5s) == std::future_status::ready);
        ok += c.get();
    }
    CHECK(ok == kThreads * kEach);
    CHECK(peak.load() > 1);
    CHECK(peak.load() <= 4);
}

TEST_CASE("keep-alive connections serve several requests") {
    Server server(test_options(), {});
    REQUIRE(server.add_route("POST", "/echo", [](const Request& q, Response& r) { echo_text(q.body, r); }, "e"));
    server.start();
    Poco::Net::HTTPClientSession session("127.0.0.1", server.port());
    session.setTimeout(Poco::Timespan(3, 0));
    session.setKeepAlive(true);
    for (int i = 0; i < 3; ++i) {
        Poco::Net::HTTPRequest req("POST", "/echo", Poco::Net::HTTPMessage::HTTP_1_1);
        std::string body = "n" + std::to_string(i);
        req.setContentLength(static_cast<std::streamsize>(body.size()));
        session.sendRequest(req) << body;
        Poco::Net::HTTPResponse resp;
        std::string got;
        Poco::StreamCopier::copyToString(session.receiveResponse(resp), got);
        CHECK(resp.getStatus() == Poco::Net::HTTPResponse::HTTP_OK);
        CHECK(got == body);
    }
    // stop() must not wait out the idle keep-alive connection.
    auto t0 = std::chrono::steady_clock::now();
    server.stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
}

TEST_CASE("stop is idempotent and waits for in-flight handlers") {
    Server server(test_options(), {});
    std::atomic<bool> entered{false}, finished{false};
    REQUIRE(server.add_route("GET", "/slow", [&](const Request&, Response& r) {
        entered = true;
        std::this_thread::sleep_for(200ms);
        finished = true;
        echo_text("done", r);
    }, "s"));
    server.start();
    auto port = server.port();
    auto client = std::async(std::launch::async, [&] { return send(port, "GET", "/slow"); });
    REQUIRE(eventually([&] { return entered.load(); }));
    server.stop();
    CHECK(finished.load());
    CHECK(client.get().body == "done");
    server.stop();
    server.stop();

    // Stopped means closed: a new connection is refused.
    CHECK_THROWS(send(port, "GET", "/slow"));

    // And it can listen again.
    server.start();
    CHECK(send(server.port(), "GET", "/slow").body == "done");
}

TEST_CASE("start on a port already taken throws naming host:port") {
    Server first(test_options(), {});
    first.start();
    auto opts = test_options();
    opts.port = first.port();
    Server second(opts, {});
    std::string expected = "cannot listen on 127.0.0.1:" + std::to_string(first.port()) + ": ";
    try {
        second.start();
        FAIL("start() should have thrown");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).rfind(expected, 0) == 0);
    }
    second.stop(); // never started: a no-op
    CHECK_THROWS_AS(first.start(), std::logic_error);
}

TEST_CASE("invalid options are refused at construction") {
    auto opts = test_options();
    opts.threads = 0;
    CHECK_THROWS_AS(Server(opts, {}), std::invalid_argument);
    opts = test_options();
    opts.timeout_ms = 0;
    CHECK_THROWS_AS(Server(opts, {}), std::invalid_argument);
}
