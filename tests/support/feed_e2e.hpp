#pragma once

// Department feeds in end-to-end tests: the real `switchboard keygen`, the
// real `switchboard-feed` client as a subprocess writing to an --out
// directory, and readers of what it wrote and of the audit trail.

#include "process.hpp"

#include <catch2/catch.hpp>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sbtest::feeds {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using sbtest::audit_text;
using sbtest::read_file;

inline std::string feed_binary() { return sbtest::env_or_fail("SB_FEED_BINARY"); }


// `switchboard keygen NAME --dir DIR`; the public key it wrote.
inline std::string keygen(const fs::path& dir, const std::string& name) {
    auto r = sbtest::run({sbtest::switchboard_binary(), "keygen", name, "--dir", dir.string()}, 20s);
    INFO(r.err);
    REQUIRE(r.code == 0);
    std::string pub = read_file(dir / (name + ".pub"));
    while (!pub.empty() && pub.back() == '\n') pub.pop_back();
    REQUIRE(pub.size() == 40);
    return pub;
}

// Waits for `pred`, reading the processes' output meanwhile (a full pipe
// would stall them). Bounded.
template <class Pred>
inline bool wait_until(Pred pred, std::chrono::milliseconds timeout, const std::vector<Process*>& procs,
                std::chrono::milliseconds step = 50ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        for (Process* p : procs)
            if (p) p->pump(0);
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(step);
    }
}

// Leaf paths of a JSON field tree ("citizen.name", "content.turns[*].text").
inline void leaves(const Poco::Dynamic::Var& v, const std::string& path, std::set<std::string>& out) {
    if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
        auto o = v.extract<Poco::JSON::Object::Ptr>();
        for (const auto& [k, child] : *o) leaves(child, path.empty() ? k : path + "." + k, out);
    } else if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
        auto a = v.extract<Poco::JSON::Array::Ptr>();
        for (std::size_t i = 0; i < a->size(); ++i) leaves(a->get(static_cast<unsigned>(i)), path + "[*]", out);
    } else {
        out.insert(path);
    }
}

// One line switchboard-feed wrote to its --out directory.
struct Line {
    std::int64_t seq = 0;
    std::string id, ref, profile;
    std::set<std::string> fields; // leaf paths of record.fields
};

// Every line of every *.jsonl file in `dir` (none if it does not exist).
// A line that does not parse fails the test: the client writes whole lines.
inline std::vector<Line> read_out(const fs::path& dir) {
    std::vector<Line> out;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) {
        if (it->path().extension() != ".jsonl") continue;
        std::ifstream in(it->path());
        for (std::string l; std::getline(in, l);) {
            if (l.empty()) continue;
            Poco::JSON::Object::Ptr o;
            try {
                o = Poco::JSON::Parser().parse(l).extract<Poco::JSON::Object::Ptr>();
            } catch (const std::exception& e) {
                FAIL("unreadable line in " << it->path().string() << ": " << e.what());
            }
            Line line;
            line.seq = o->getValue<std::int64_t>("seq");
            line.id = o->getValue<std::string>("id");
            line.profile = o->optValue<std::string>("profile", "");
            auto rec = o->getObject("record");
            REQUIRE(rec);
            auto fields = rec->getObject("fields");
            REQUIRE(fields);
            leaves(fields, "", line.fields);
            line.ref = fields->optValue<std::string>("ref", "");
            out.push_back(std::move(line));
        }
    }
    return out;
}

inline std::size_t line_count(const fs::path& dir) {
    std::size_t n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) {
        if (it->path().extension() != ".jsonl") continue;
        std::ifstream in(it->path());
        for (std::string l; std::getline(in, l);) n += !l.empty();
    }
    return n;
}


// The endpoint instance `name` logged ("INFO  ...[name]: listening on tcp://...").
inline std::string endpoint_of(Process& daemon, const std::string& name) {
    auto m = daemon.wait_for_log("\\[" + name + "\\]: listening on (tcp://127\\.0\\.0\\.1:[0-9]+) \\(CURVE", 20s);
    INFO(daemon.err());
    REQUIRE(m);
    return (*m)[1];
}

// switchboard-feed with the directory sink.
inline std::unique_ptr<Process> feed(const std::string& endpoint, const fs::path& keys, const std::string& key,
                              const fs::path& state, const fs::path& out, int credit = 1000) {
    return std::make_unique<Process>(std::vector<std::string>{
        feed_binary(), "--endpoint", endpoint, "--server-key", (keys / "server.pub").string(), "--key",
        (keys / (key + ".key")).string(), "--state", state.string(), "--out", out.string(), "--credit",
        std::to_string(credit)});
}

} // namespace sbtest::feeds
