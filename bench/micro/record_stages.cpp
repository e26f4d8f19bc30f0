// The per-record stages of the pipeline, timed one at a time on real
// records, in one thread and without I/O: what bench/run-pipeline measures
// end to end, taken apart. End-to-end runs on a shared 2-core machine vary
// by about ±10 %; these figures vary by a few per cent, so a change to one
// stage can be measured here first (docs/performance.md).
//
//   bench/run-micro [-n RECORDS]      (builds it in build-bench/ and runs it)
//
// Stages, each over the same sample of council contacts
// (bench/gen_records), best of five rounds, in ns per record:
//   parse      a JSON line into a record as the jsonl-source plugin does it
//              (the SDK's reader, flat format, its SortingSink with the
//              bench config's categories, through the host's record API)
//   cards      card redaction over every string value (as at ingest)
//   decide     classification and routing (the bench config's policy)
//   profiles   the minimised copy for each route (Profile::apply)
//   encode     the record's encoding for its chunk (store::PreEncoded)
//   json       each copy as JSON (what a destination is handed)
//   free       freeing the record and its copies
// and, per stage, the allocations it makes per record (operator new calls,
// counted by this program's own operator new, which calls the allocator's
// malloc): allocation is a sixth of the daemon's CPU, spread over stages.
#include "config/config.hpp"
#include "pipeline/pii.hpp"
#include "pipeline/policy.hpp"
#include "pipeline/profile.hpp"
#include "store/codec.hpp"

#include <switchboard/detail/json_record.hpp>
#include <switchboard/detail/record_data.hpp>

#include <toml++/toml.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <new>
#include <string>
#include <vector>

// Every operator new of this program, counted (one thread: a plain counter).
// Its delete frees with free(), which GCC takes for a mismatch once inlined.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::size_t g_allocations = 0;
void* operator new(std::size_t size) {
    ++g_allocations;
    if (void* p = std::malloc(size ? size : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace sw = switchboard;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& why) {
    std::cerr << "record_stages: " << why << "\n";
    std::exit(2);
}

struct Sample {
    std::vector<std::string> lines;
    sb::detail::CategoryMap categories;
    sb::detail::FlatReadOptions options;
    std::string occurred_field = "occurred_at";
};

struct Timing {
    double ns = 1e300;    // the best round, per record
    double allocs = 0;    // operator new calls per record (the last round)
};

// The best of `rounds` runs of `fn` over the sample, in ns per record.
Timing best_ns(std::size_t records, int rounds, const std::function<void()>& fn) {
    Timing t;
    for (int r = 0; r < rounds; ++r) {
        const std::size_t a0 = g_allocations;
        auto t0 = Clock::now();
        fn();
        double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(records);
        t.ns = std::min(t.ns, ns);
        t.allocs = static_cast<double>(g_allocations - a0) / static_cast<double>(records);
    }
    return t;
}

} // namespace

int main(int argc, char** argv) {
    std::string config_path, input_path;
    std::size_t n = 20000;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-c" && i + 1 < argc) config_path = argv[++i];
        else if (a == "-i" && i + 1 < argc) input_path = argv[++i];
        else if (a == "-n" && i + 1 < argc) n = std::strtoul(argv[++i], nullptr, 10);
        else die("usage: record_stages -c bench/pipeline.toml -i INPUT.jsonl [-n RECORDS]");
    }
    if (config_path.empty() || input_path.empty() || n == 0)
        die("usage: record_stages -c bench/pipeline.toml -i INPUT.jsonl [-n RECORDS]");

    // The policy (classification, routes, profiles) of the bench config.
    sw::config::Diagnostics diagnostics;
    auto config = sw::config::load_config(config_path, diagnostics);
    if (config) sw::config::resolve_secrets(*config, diagnostics);
    std::unique_ptr<sw::pipeline::Policy> policy;
    if (config && !diagnostics.has_errors()) policy = sw::pipeline::Policy::compile(*config, diagnostics);
    if (!policy || diagnostics.has_errors()) {
        for (const auto& d : diagnostics.all()) std::cerr << d.str() << "\n";
        die("the config does not compile");
    }
    // The source's categories, as the jsonl-source plugin reads them.
    Sample sample;
    {
        auto doc = toml::parse_file(config_path);
        std::vector<std::string> list;
        if (auto* arr = doc["sources"]["contacts"]["config"]["categories"].as_array())
            for (auto& v : *arr)
                if (auto s = v.value<std::string>()) list.push_back(*s);
        std::string why;
        auto map = sb::detail::CategoryMap::from_list(list, why);
        if (!map) die("categories: " + why);
        sample.categories = std::move(*map);
        sample.options.categories = &sample.categories;
        sample.options.occurred_at_field = sample.occurred_field;
    }
    {
        std::ifstream in(input_path);
        if (!in) die("cannot read " + input_path);
        for (std::string l; sample.lines.size() < n && std::getline(in, l);) sample.lines.push_back(l);
        if (sample.lines.empty()) die(input_path + " has no lines");
        n = sample.lines.size();
    }

    std::vector<std::unique_ptr<sb_record>> records(n);
    std::vector<std::vector<std::shared_ptr<sb_record>>> copies(n);
    std::vector<std::vector<const sw::pipeline::Route*>> routes(n);
    const std::int64_t now = sb::detail::parse_time("2026-11-29T00:00:00Z").value_or(0);
    sb::detail::JsonRecordReader reader;
    sb_host_api api{};
    api.struct_size = sizeof api; // as the host stamps it: the sink uses shapes (ABI 1.2)
    api.abi_major = SB_ABI_MAJOR;
    api.abi_minor = SB_ABI_MINOR;
    sb::detail::fill_record_api(api);
    sb::detail::SortingSink sorting(&api, &sample.categories);
    sb::detail::FlatReadOptions sorted_options = sample.options;
    sorted_options.categories = nullptr; // the sink finds them, once per shape
    sw::pipeline::Policy::Decision decision;
    std::size_t copies_made = 0, json_bytes = 0;
    const int rounds = 5;

    auto fresh = [&] {
        for (auto& r : records) r.reset();
        for (auto& c : copies) c.clear();
    };
    auto parse = [&] {
        for (std::size_t i = 0; i < n; ++i) {
            records[i] = std::make_unique<sb_record>();
            sorting.begin(records[i].get(), sample.lines[i]);
            if (!reader.read_flat(sample.lines[i], sorting, sorted_options) || sorting.finish() != SB_OK)
                die("line " + std::to_string(i + 1) + " does not parse");
            records[i]->data.set_meta("source", "contacts");
            records[i]->data.set_meta("received_at", "2026-11-29T00:00:00Z");
        }
    };
    auto cards = [&] {
        for (auto& r : records)
            for (auto& leaf : r->data.mutable_leaves())
                if (leaf.type == SB_VALUE_STRING)
                    if (auto red = sw::pii::redact_cards(leaf.str)) leaf.str = std::move(*red);
    };
    auto decide = [&] {
        for (std::size_t i = 0; i < n; ++i) {
            policy->decide(*records[i], decision);
            routes[i] = decision.routes;
            records[i]->data.set_meta("category", decision.classified.category);
        }
    };
    auto profiles = [&] {
        copies_made = 0;
        for (std::size_t i = 0; i < n; ++i) {
            copies[i].clear();
            for (const auto* route : routes[i]) {
                if (!route->profile) continue;
                auto c = std::make_shared<sb_record>();
                route->profile->apply(*records[i], *c, route->has_lawful_basis(), now, nullptr, nullptr);
                copies[i].push_back(std::move(c));
                ++copies_made;
            }
        }
    };
    std::vector<sw::store::PreEncoded> encoded(n);
    auto encode = [&] {
        for (std::size_t i = 0; i < n; ++i) encoded[i] = sw::store::PreEncoded(*records[i]);
    };
    auto json = [&] {
        json_bytes = 0;
        for (auto& cs : copies)
            for (auto& c : cs) {
                std::string out;
                c->data.write_json(out);
                json_bytes += out.size();
            }
    };

    // Each stage is timed on the state the stages before it leave.
    struct Row {
        const char* name;
        Timing t;
    };
    std::vector<Row> rows;
    Timing free_t, parse_t;
    for (int r = 0; r < rounds + 1; ++r) {
        auto t0 = Clock::now();
        fresh();
        if (r > 0) // (the first round has nothing to free)
            free_t.ns = std::min(free_t.ns, std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(n));
        const std::size_t a0 = g_allocations;
        t0 = Clock::now();
        parse();
        parse_t.ns = std::min(parse_t.ns, std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(n));
        parse_t.allocs = static_cast<double>(g_allocations - a0) / static_cast<double>(n);
    }
    rows.push_back({"parse", parse_t});
    rows.push_back({"cards", best_ns(n, rounds, cards)});
    rows.push_back({"decide", best_ns(n, rounds, decide)});
    rows.push_back({"profiles", best_ns(n, rounds, profiles)});
    rows.push_back({"encode", best_ns(n, rounds, encode)});
    rows.push_back({"json", best_ns(n, rounds, json)});
    rows.push_back({"free", free_t});

    double total = 0, allocs = 0;
    for (const auto& row : rows) {
        total += row.t.ns;
        allocs += row.t.allocs;
    }
    std::printf("%zu records, %.2f copies per record, %.0f bytes of JSON per copy; best of %d rounds\n", n,
                static_cast<double>(copies_made) / static_cast<double>(n),
                copies_made ? static_cast<double>(json_bytes) / static_cast<double>(copies_made) : 0.0, rounds);
    for (const auto& row : rows)
        std::printf("%-9s %8.0f ns/record %6.1f allocations/record\n", row.name, row.t.ns, row.t.allocs);
    std::printf("%-9s %8.0f ns/record %6.1f allocations/record (one thread; no journal, audit, I/O or threads "
                "handing over)\n", "total", total, allocs);
    return 0;
}
