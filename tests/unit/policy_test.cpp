// The policy compiled from real config files: classification, routes,
// proportionality profiles (default deny, special category data, every
// transform), the cross-section config checks, and explain.

#include "config/config.hpp"
#include "pipeline/explain.hpp"
#include "pipeline/pii.hpp"
#include "pipeline/policy.hpp"

#include <catch2/catch.hpp>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

// Counts heap allocations while `g_count_allocations` is set, to prove the
// record path allocates nothing it does not need.
namespace {
std::atomic<bool> g_count_allocations{false};
std::atomic<long> g_allocations{0};
} // namespace

void* operator new(std::size_t n) {
    if (g_count_allocations) ++g_allocations;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
// The default operator delete (libstdc++: free) pairs with it, also under
// valgrind, which replaces both.

namespace fs = std::filesystem;
using namespace switchboard;
using pipeline::Action;
using pipeline::FieldDecision;
using pipeline::Policy;

namespace {

constexpr const char* kHashKey = "policy-test-hash-key";

struct Dir {
    fs::path path;
    Dir() {
        char tmpl[] = "/tmp/sb-policy-XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~Dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    Dir(const Dir&) = delete;
    Dir& operator=(const Dir&) = delete;
};

struct Compiled {
    Dir dir;
    std::unique_ptr<config::Config> config;
    std::unique_ptr<Policy> policy;
    config::Diagnostics diagnostics;
    std::vector<std::string> lines; // diagnostics, the temp dir shown as "<dir>"

    const Policy& operator*() const { return *policy; }
    const Policy* operator->() const { return policy.get(); }
};

// Writes `text` as main.toml, loads it as `switchboard check` would (minus
// plugin binding, which needs plugin libraries), and compiles the policy.
std::unique_ptr<Compiled> compile(const std::string& text) {
    ::setenv("SB_POLICY_TEST_KEY", kHashKey, 1);
    auto c = std::make_unique<Compiled>();
    std::ofstream(c->dir.path / "main.toml") << text;
    c->config = config::load_config(c->dir.path / "main.toml", c->diagnostics);
    config::resolve_secrets(*c->config, c->diagnostics);
    c->policy = Policy::compile(*c->config, c->diagnostics);
    c->diagnostics.sort();
    for (const auto& d : c->diagnostics.all()) {
        std::string s = d.str();
        const std::string p = c->dir.path.string();
        for (auto at = s.find(p); at != std::string::npos; at = s.find(p)) s.replace(at, p.size(), "<dir>");
        c->lines.push_back(s);
    }
    return c;
}

std::string errors_of(const Compiled& c) {
    std::string out;
    for (std::size_t i = 0; i < c.lines.size(); ++i)
        if (!c.diagnostics.all()[i].warning) out += c.lines[i] + "\n";
    return out;
}

// Sources and destinations most tests share.
const std::string kInstances = R"([node]
data_dir = "data"

[sources.web-chat]
plugin = "landbot"
[sources.phone-line]
plugin = "verint"
[sources.front-desk]
plugin = "qgenie"

[destinations.revenues]
plugin = "zmq"
[destinations.waste]
plugin = "zmq"
[destinations.review]
plugin = "zmq"
[destinations.social-care]
plugin = "zmq"
)";

// A route that takes every classified record to review, for tests of the
// classification alone.
const std::string kReviewAll = R"(
[[route]]
category = "*"
destination = "review"
purpose = "tests"
profile = "p"

[profiles.p.fields]
"content.text" = "redact"
)";

// Builds records the way the host does (RecordData directly: the host may
// set every envelope key).
struct Rec {
    sb_record r;
    Rec& meta(const char* key, const std::string& v) {
        REQUIRE(r.data.set_meta(key, v) == SB_OK);
        return *this;
    }
    Rec& str(const std::string& path, std::string_view v, const char* category) {
        sb_value x{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
        REQUIRE(r.data.set(path, x, category) == SB_OK);
        return *this;
    }
    Rec& num(const std::string& path, std::int64_t v, const char* category) {
        sb_value x{SB_VALUE_INT, nullptr, 0, v, 0};
        REQUIRE(r.data.set(path, x, category) == SB_OK);
        return *this;
    }
    Rec& null(const std::string& path, const char* category) {
        sb_value x{SB_VALUE_NULL, nullptr, 0, 0, 0};
        REQUIRE(r.data.set(path, x, category) == SB_OK);
        return *this;
    }
    Rec& attach(const char* name, const char* uri, const char* category) {
        sb_attachment a{};
        a.struct_size = sizeof a;
        a.name = name;
        a.uri = uri;
        a.media_type = "application/octet-stream";
        a.size = 100;
        a.category = category;
        REQUIRE(r.data.add_attachment(a) == SB_OK);
        return *this;
    }
};

std::string category_of(const Policy& p, const sb_record& r) { return p.classifier().classify(r).category; }

std::vector<std::string> labels(const std::vector<const pipeline::Route*>& routes) {
    std::vector<std::string> out;
    for (const auto* r : routes) out.push_back(r->label);
    return out;
}

const FieldDecision* decision_for(const std::vector<FieldDecision>& ds, const std::string& path) {
    for (const auto& d : ds)
        if (d.path == path) return &d;
    return nullptr;
}

std::string str_at(const sb_record& r, const std::string& path) {
    const sb::detail::Leaf* l = r.data.find(path);
    return l && l->type == SB_VALUE_STRING ? l->str : "<absent or not a string>";
}

// 2025-01-06T12:00:00Z
constexpr std::int64_t kNow = 1'736'164'800'000;

} // namespace

// ---------------------------------------------------------------------------
// Classification

TEST_CASE("classify: each matcher") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "Council Tax"

[[classify.rule]]
category = "housing"
field = "hints.service"
one_of = ["Housing Options", "Homelessness"]

[[classify.rule]]
category = "benefits"
field = "content.subject"
contains = "benefit"

[[classify.rule]]
category = "parking"
field = "hints.ref"
regex = "^PCN[0-9]{6}$"
case_sensitive = true

[[classify.rule]]
category = "waste"
field = "content.turns[*].text"
keywords = ["missed bin", "recycling", "fly-tipping", "#bins"]

[[classify.rule]]
category = "numbers"
field = "hints.queue_id"
equals = "42"

)" + kReviewAll);
    REQUIRE(errors_of(*c).empty());
    const Policy& p = **c;
    auto queue = [&](const char* v) { return category_of(p, Rec().str("hints.queue", v, "meta.queue").r); };
    CHECK(queue("Council Tax") == "council_tax");
    CHECK(queue("council tax") == "council_tax");     // case-insensitive by default
    CHECK(queue("  COUNCIL TAX\t") == "council_tax"); // surrounding whitespace ignored
    CHECK(queue("Council Tax Reduction") == "unclassified");
    CHECK(p.classifier().classify(Rec().str("hints.queue", "council tax", "meta.queue").r).rule == 0);

    auto service = [&](const char* v) { return category_of(p, Rec().str("hints.service", v, "meta.queue").r); };
    CHECK(service("homelessness") == "housing");
    CHECK(service("Housing Options") == "housing");
    CHECK(service("Housing") == "unclassified");

    auto subject = [&](const char* v) { return category_of(p, Rec().str("content.subject", v, "content.free_text").r); };
    CHECK(subject("Re: Housing BENEFIT claim") == "benefits");
    CHECK(subject("benefit") == "benefits");
    CHECK(subject("benefi") == "unclassified");

    auto ref = [&](const char* v) { return category_of(p, Rec().str("hints.ref", v, "identifier.pcn").r); };
    CHECK(ref("PCN123456") == "parking");
    CHECK(ref("pcn123456") == "unclassified"); // case_sensitive = true
    CHECK(ref("xPCN123456") == "unclassified");

    auto turns = [&](std::vector<const char*> texts) {
        Rec r;
        for (std::size_t i = 0; i < texts.size(); ++i)
            r.str("content.turns[" + std::to_string(i) + "].text", texts[i], "content.free_text");
        return category_of(p, r.r);
    };
    CHECK(turns({"hello", "I had a MISSED   bin on Monday"}) == "waste"); // phrase over a whitespace run
    CHECK(turns({"Missed bin"}) == "waste");
    CHECK(turns({"my bins were missed"}) == "unclassified");   // not the phrase
    CHECK(turns({"the recyclingcentre"}) == "unclassified");  // whole words only
    CHECK(turns({"the re-recycling"}) == "waste");             // '-' is a boundary
    CHECK(turns({"fly-tipping on my road."}) == "waste");
    CHECK(turns({"about #bins"}) == "waste");                  // needle starting with a non-word character
    CHECK(turns({"a", "b", "c", "d", "e", "recycling?"}) == "waste"); // any element
    CHECK(turns({"café recycling"}) == "waste");
    CHECK(turns({"caférecycling"}) == "unclassified");         // UTF-8 letters are word characters
    // Another field with the keywords does not count.
    CHECK(category_of(p, Rec().str("content.text", "missed bin", "content.free_text").r) == "unclassified");

    // Numbers are tested as their text; null never matches.
    CHECK(category_of(p, Rec().num("hints.queue_id", 42, "meta.queue").r) == "numbers");
    CHECK(category_of(p, Rec().null("hints.queue", "meta.queue").r) == "unclassified");
}

TEST_CASE("classify: first match wins, source filters, unclassified") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "phone_ctax"
field = "hints.queue"
equals = "ctax"
source = "phone-line"

[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "ctax"

[[classify.rule]]
category = "anything_ctax"
field = "content.text"
keywords = ["council tax", "CTAX"]

)" + kReviewAll);
    REQUIRE(errors_of(*c).empty());
    const auto& cl = (*c)->classifier();
    auto r = [](const char* source) {
        Rec x;
        x.str("hints.queue", "ctax", "meta.queue").str("content.text", "about council tax", "content.free_text");
        if (source) x.meta("source", source);
        return x;
    };
    auto phone = cl.classify(r("phone-line").r);
    CHECK(phone.category == "phone_ctax");
    CHECK(phone.rule == 0);
    CHECK(cl.classify(r("web-chat").r).rule == 1);
    CHECK(cl.classify(r(nullptr).r).rule == 1); // no source: a source-filtered rule cannot match
    auto text_only = cl.classify(Rec().str("content.text", "my CTAX bill", "content.free_text").r);
    CHECK(text_only.category == "anything_ctax");
    CHECK(text_only.rule == 2);

    auto none = cl.classify(Rec().str("content.text", "a pothole", "content.free_text").r);
    CHECK(none.category == "unclassified");
    CHECK(none.rule == -1);
    CHECK(cl.classify(sb_record{}).category == "unclassified");

    CHECK(cl.describe_rule(0) == "classify.rule[0] (hints.queue equals \"ctax\", source phone-line)");
    CHECK(cl.describe_rule(2) == "classify.rule[2] (content.text keywords \"council tax\", \"CTAX\")");
    CHECK(cl.describe_rule(-1) == "no rule matched");
}

TEST_CASE("classify: a regex never fails on a huge field") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "a"
field = "content.text"
regex = "(a|b)*c"

[[route]]
category = "a"
destination = "review"
purpose = "tests"
profile = "p"

[profiles.p.fields]
"content.text" = "redact"
)");
    REQUIRE(errors_of(*c).empty());
    std::string big(200'000, 'a');
    CHECK(category_of(**c, Rec().str("content.text", big, "content.free_text").r) == "unclassified");
    CHECK(category_of(**c, Rec().str("content.text", "aabc", "content.free_text").r) == "a");
}

TEST_CASE("classify: allocates nothing but the result") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
one_of = ["Council Tax", "CTAX"]
source = ["web-chat", "phone-line"]

[[classify.rule]]
category = "missed_bin"
field = "content.turns[*].text"
keywords = ["missed bin", "recycling"]

[[classify.rule]]
category = "housing"
field = "content.text"
contains = "housing"

)" + kReviewAll);
    REQUIRE(errors_of(*c).empty());
    Rec r;
    r.meta("source", "web-chat").str("hints.queue", "revenues", "meta.queue");
    for (int i = 0; i < 6; ++i)
        r.str("content.turns[" + std::to_string(i) + "].text", "my bin was not collected on Monday", "content.free_text");
    r.str("content.text", "nothing about homes", "content.free_text");
    Rec hit;
    hit.str("content.turns[3].text", "a missed bin", "content.free_text");

    const auto& cl = (*c)->classifier();
    g_allocations = 0;
    g_count_allocations = true;
    auto miss = cl.classify(r.r); // every rule tried; "unclassified" fits the small-string buffer
    auto found = cl.classify(hit.r);
    g_count_allocations = false;
    CHECK(miss.rule == -1);
    CHECK(found.category == "missed_bin");
    CHECK(g_allocations == 0);
}

TEST_CASE("classify: records set by a shape, the leaves each rule looks at found once per shape") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
one_of = ["Council Tax", "CTAX"]
source = "phone-line"

[[classify.rule]]
category = "missed_bin"
field = "content.turns[*].text"
keywords = ["missed bin"]

[[classify.rule]]
category = "housing"
field = "content.text"
contains = "housing"

)" + kReviewAll);
    REQUIRE(errors_of(*c).empty());
    const auto& cl = (*c)->classifier();
    // Paths given out of path order: the shape sorts them, values follow.
    const char* paths[] = {"content.text", "hints.queue", "content.turns[0].text", "content.turns[1].text",
                           "agent.id"};
    const char* cats[] = {"content.free_text", "meta.queue", "content.free_text", "content.free_text",
                          "operational"};
    auto shape = sb::detail::ShapeData::make(paths, cats, 5);
    REQUIRE(shape);
    auto shaped = [&](const char* source, const char* text, const char* queue, const char* turn0,
                      const char* turn1) {
        auto r = std::make_unique<sb_record>();
        const char* v[] = {text, queue, turn0, turn1, "A1"};
        sb_value values[5];
        for (int k = 0; k < 5; ++k) values[k] = sb_value{SB_VALUE_STRING, v[k], std::strlen(v[k]), 0, 0};
        REQUIRE(r->data.set_shape(*shape, values) == SB_OK);
        REQUIRE(r->data.shape_id() != 0);
        if (source) REQUIRE(r->data.set_meta("source", source) == SB_OK);
        return r;
    };
    // The same shape with each rule's values in turn: every record gets its
    // own answer, whichever came first on this thread.
    CHECK(cl.classify(*shaped("phone-line", "x", "ctax", "hello", "bye")).rule == 0);
    CHECK(cl.classify(*shaped("web-chat", "x", "ctax", "hello", "bye")).rule == -1);
    CHECK(cl.classify(*shaped("web-chat", "x", "ctax", "hi", "a missed bin")).rule == 1);
    CHECK(cl.classify(*shaped("phone-line", "housing", "other", "hi", "bye")).rule == 2);
    CHECK(cl.classify(*shaped(nullptr, "about housing", "CTAX", "a missed bin", "bye")).rule == 1);
    CHECK(cl.classify(*shaped("phone-line", "no", "no", "no", "no")).category == "unclassified");

    // Another classifier with other rules, on the same thread and shape: its
    // own leaves, not the first one's.
    auto other = compile(kInstances + R"(
[[classify.rule]]
category = "by_agent"
field = "agent.id"
equals = "a1"

)" + kReviewAll);
    REQUIRE(errors_of(*other).empty());
    CHECK((*other)->classifier().classify(*shaped(nullptr, "housing", "ctax", "x", "y")).category == "by_agent");
    CHECK(cl.classify(*shaped(nullptr, "housing", "ctax", "x", "y")).category == "housing");

    // A field set after the shape: the record no longer has it, and is searched.
    auto grown = shaped("web-chat", "no", "no", "no", "no");
    sb_value more{SB_VALUE_STRING, "missed bin again", 16, 0, 0};
    REQUIRE(grown->data.set("content.turns[2].text", more, "content.free_text") == SB_OK);
    CHECK(grown->data.shape_id() == 0);
    CHECK(cl.classify(*grown).rule == 1);

    // Many shapes, more than the thread's memo has slots, so that they share
    // slots, with the rule's leaf at another index in each, and two
    // classifiers taking turns: a memo kept for another shape would look at
    // the wrong leaf.
    auto text_rule = compile(kInstances + R"(
[[classify.rule]]
category = "text_ctax"
field = "content.text"
contains = "ctax"

)" + kReviewAll);
    REQUIRE(errors_of(*text_rule).empty());
    const auto& tl = (*text_rule)->classifier();
    std::vector<std::unique_ptr<sb::detail::ShapeData>> shapes;
    int wrong = 0;
    for (int i = 0; i < 300; ++i) {
        const int before = i % 8; // leaves before hints.queue; 8 leaves in all
        std::vector<std::string> names;
        for (int j = 0; j < before; ++j) names.push_back("a.s" + std::to_string(i) + "_" + std::to_string(j));
        names.push_back("hints.queue");
        for (int j = before; j < 7; ++j) names.push_back("z.s" + std::to_string(i) + "_" + std::to_string(j));
        std::vector<const char*> ps, cs;
        for (const auto& n : names) {
            ps.push_back(n.c_str());
            cs.push_back("operational");
        }
        shapes.push_back(sb::detail::ShapeData::make(ps.data(), cs.data(), ps.size()));
        REQUIRE(shapes.back());
        const bool hit = i % 3 == 0;
        std::vector<sb_value> values;
        for (const auto& n : names) {
            const char* v = n == "hints.queue" ? (hit ? "ctax" : "other") : "filler";
            values.push_back(sb_value{SB_VALUE_STRING, v, std::strlen(v), 0, 0});
        }
        sb_record r;
        REQUIRE(r.data.set_shape(*shapes.back(), values.data()) == SB_OK);
        REQUIRE(r.data.set_meta("source", "phone-line") == SB_OK);
        for (int round = 0; round < 2; ++round) { // the second time from the memo
            if (cl.classify(r).rule != (hit ? 0 : -1)) ++wrong;
            if (tl.classify(r).rule != -1) ++wrong; // it has no content.text
        }
    }
    CHECK(wrong == 0);

    // Once its shape is known, classifying a record allocates nothing but the result.
    // (Known again: the 600 shapes and classifiers above took every slot.)
    auto again = shaped("phone-line", "no", "Council Tax", "no", "no");
    CHECK(cl.classify(*again).category == "council_tax");
    g_allocations = 0;
    g_count_allocations = true;
    auto hit = cl.classify(*again);
    g_count_allocations = false;
    CHECK(hit.category == "council_tax");
    CHECK(g_allocations == 0);
}

// ---------------------------------------------------------------------------
// Routes

TEST_CASE("routes: '*' never takes unclassified; channel and source filters; one per destination") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "council_tax"
field = "q"
equals = "ctax"
[[classify.rule]]
category = "waste"
field = "q"
equals = "bins"
[[classify.rule]]
category = "recycling"
field = "q"
equals = "recycling"

[[route]]
name = "ctax"
category = "council_tax"
destination = "revenues"
purpose = "council tax enquiry"
profile = "p"

[[route]]
name = "all-phone"
category = "*"
channel = "phone"
destination = "waste"
purpose = "phone log"
profile = "p"

[[route]]
name = "review"
category = "unclassified"
destination = "review"
purpose = "manual review"
profile = "p"

[[route]]
name = "bins-web"
category = ["waste", "recycling"]
channel = ["web_chat", "whatsapp"]
source = "web-chat"
destination = "waste"
purpose = "missed bins"
profile = "p"

[profiles.p.fields]
"content.text" = "redact"
)");
    REQUIRE(errors_of(*c).empty()); // all-phone and bins-web share 'waste' on disjoint channels
    const auto& router = (*c)->router();
    using V = std::vector<std::string>;
    CHECK(labels(router.routes("council_tax", "web_chat", "web-chat")) == V{"ctax"});
    CHECK(labels(router.routes("council_tax", "phone", "phone-line")) == V{"ctax", "all-phone"});
    CHECK(labels(router.routes("unclassified", "phone", "phone-line")) == V{"review"});
    CHECK(labels(router.routes("unclassified", "web_chat", "web-chat")) == V{"review"});
    CHECK(labels(router.routes("waste", "web_chat", "web-chat")) == V{"bins-web"});
    CHECK(labels(router.routes("recycling", "whatsapp", "web-chat")) == V{"bins-web"});
    CHECK(labels(router.routes("waste", "web_chat", "front-desk")).empty()); // source filter
    CHECK(labels(router.routes("waste", "", "web-chat")).empty());           // no channel: no channel filter passes
    CHECK(labels(router.routes("waste", "phone", "phone-line")) == V{"all-phone"});
    CHECK(labels(router.routes("pothole", "email", "web-chat")).empty());

    // decide(): classification then routes, from the record's meta.
    Rec r;
    r.meta("source", "phone-line").meta("channel", "phone").str("q", "ctax", "meta.queue");
    auto d = (*c)->decide(r.r);
    CHECK(d.classified.category == "council_tax");
    CHECK(labels(d.routes) == V{"ctax", "all-phone"});
    REQUIRE(d.routes[0]->profile != nullptr);
    CHECK(d.routes[0]->profile->name() == "p");
}

TEST_CASE("routes: overlapping routes to one destination are an error, and only the first is used") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "council_tax"
field = "q"
equals = "ctax"

[[route]]
name = "first"
category = "council_tax"
destination = "revenues"
purpose = "p"
profile = "p"

[[route]]
name = "second"
category = ["housing", "council_tax"]
channel = "phone"
destination = "revenues"
purpose = "p"
profile = "p"

[[route]]
category = "*"
destination = "revenues"
purpose = "p"
profile = "p"

[[route]]
name = "review"
category = "unclassified"
destination = "revenues"
purpose = "p"
profile = "p"

[profiles.p.fields]
"content.text" = "redact"
)");
    std::string errors = errors_of(*c);
    CHECK(errors ==
          "<dir>/main.toml:36:15: route[1].destination: 'revenues' already receives category 'council_tax' from "
          "route[0] (first), so a record would be sent twice; make their categories, channels or sources "
          "disjoint\n"
          "<dir>/main.toml:42:15: route[2].destination: 'revenues' already receives category 'council_tax' from "
          "route[0] (first), so a record would be sent twice; make their categories, channels or sources "
          "disjoint\n");
    using V = std::vector<std::string>;
    CHECK(labels((*c)->router().routes("council_tax", "phone", "x")) == V{"first"});
    CHECK(labels((*c)->router().routes("unclassified", "phone", "x")) == V{"review"}); // "*" does not overlap it
}

// ---------------------------------------------------------------------------
// Profiles

namespace {

const std::string kRevenues = kInstances + R"toml(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "ctax"

[[route]]
name = "ctax"
category = "council_tax"
destination = "revenues"
purpose = "council tax enquiry"
profile = "revenues"
lawful_basis = "Art. 9(2)(g): substantial public interest (council tax support)"

[profiles.revenues]
version = 3
description = "what revenues officers need"
hash_key = "env:SB_POLICY_TEST_KEY"

[profiles.revenues.fields]
"citizen.name" = "keep"
"citizen.*" = "mask"
"citizen.address.postcode" = "generalise:postcode"
"citizen.dob" = "generalise:age_band"
"contact.phone" = "mask"
"contact.email" = "mask:3"
"identifiers.nino" = "hash"
"content.text" = "redact"
"content.turns[*].text" = "redact"
"content.turns[0].author" = "keep"
"occurred.date" = "generalise:month"
"special.health" = "keep"
"amounts.*" = "keep"
"attachments.recording" = "keep"
"attachments.scan" = "redact"
)toml";

struct Applied {
    sb_record out;
    std::vector<FieldDecision> decisions;
    std::string summary;
    std::size_t sent = 0;
};

Applied apply(const pipeline::Profile& profile, const sb_record& in, bool lawful) {
    Applied a;
    a.sent = profile.apply(in, a.out, lawful, kNow, &a.decisions, &a.summary);
    return a;
}

} // namespace

TEST_CASE("profiles: default deny, and the most specific pattern decides") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile* p = (*c)->profile("revenues");
    REQUIRE(p != nullptr);
    CHECK(p->version() == 3);
    CHECK(p->description() == "what revenues officers need");
    CHECK((*c)->profile("nope") == nullptr);

    auto pattern_for = [&](const char* path) {
        const pipeline::FieldRule* r = p->rule_for(path);
        return r ? r->pattern.text() : std::string("-");
    };
    CHECK(pattern_for("citizen.name") == "citizen.name");                       // exact beats subtree
    CHECK(pattern_for("citizen.title") == "citizen.*");
    CHECK(pattern_for("citizen.address.postcode") == "citizen.address.postcode");
    CHECK(pattern_for("citizen.address.line1") == "citizen.*");                 // subtree, deeper
    CHECK(pattern_for("citizen") == "-");                                        // a subtree is not its root
    CHECK(pattern_for("content.turns[0].author") == "content.turns[0].author");
    CHECK(pattern_for("content.turns[1].author") == "-");
    CHECK(pattern_for("content.turns[7].text") == "content.turns[*].text");
    CHECK(pattern_for("content.textual") == "-");
    CHECK(pattern_for("hints.queue") == "-");

    Rec r;
    r.str("citizen.name", "Gareth Pryce", "identity.name")
        .str("citizen.title", "Mr", "identity.title")
        .str("hints.queue", "ctax", "meta.queue")
        .str("content.turns[0].author", "citizen", "content.author")
        .str("content.turns[1].author", "agent", "content.author")
        .str("vendor.session", "sess-991", "meta.session");
    Applied a = apply(*p, r.r, true);
    CHECK(a.out.data.json() == R"({"id":null,"meta":{},"fields":{"citizen":{"name":"Gareth Pryce","title":")" +
                                   pii::mask("Mr", 4) +
                                   R"("},"content":{"turns":[{"author":"citizen"}]}},"attachments":[]})");
    CHECK(a.sent == 3);
    const FieldDecision* dropped = decision_for(a.decisions, "hints.queue");
    REQUIRE(dropped);
    CHECK(dropped->action == Action::Dropped);
    CHECK(dropped->pattern.empty());
    CHECK(dropped->reason == "dropped: not in profile revenues");
    CHECK(decision_for(a.decisions, "content.turns[1].author")->action == Action::Dropped);
    CHECK(decision_for(a.decisions, "citizen.title")->pattern == "citizen.*");
}

TEST_CASE("profiles: every transform, on strings, numbers and null") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    Rec r;
    r.str("citizen.name", "Gareth Pryce", "identity.name")
        .str("citizen.address.postcode", "l8 0zz", "contact.postcode")
        .str("citizen.dob", "1980-05-17", "identity.dob")
        .str("contact.phone", "07700900312", "contact.phone")
        .str("contact.email", "gareth@example.org", "contact.email")
        .str("identifiers.nino", "QQ 12 34 56 C", "identifier.nino")
        .str("content.text", "My NI number is QQ 12 34 56 C, thanks", "content.free_text")
        .str("occurred.date", "2025-01-06T09:44:05Z", "meta.time")
        .num("amounts.due", 4210, "financial.amount")
        .num("citizen.phone2", 7700900313, "contact.phone")
        .null("citizen.middle_name", "identity.name");
    Applied a = apply(p, r.r, false);

    CHECK(str_at(a.out, "citizen.name") == "Gareth Pryce");
    CHECK(str_at(a.out, "citizen.address.postcode") == "L8");
    CHECK(str_at(a.out, "citizen.dob") == "35-44"); // 44 on 2025-01-06
    CHECK(str_at(a.out, "contact.phone") == "*******0312");
    CHECK(str_at(a.out, "contact.phone") == pii::mask("07700900312", 4));
    CHECK(str_at(a.out, "contact.email") == pii::mask("gareth@example.org", 3));
    CHECK(str_at(a.out, "identifiers.nino") == pii::pseudonym(kHashKey, "QQ 12 34 56 C"));
    CHECK(str_at(a.out, "identifiers.nino").size() == 64);
    CHECK(str_at(a.out, "content.text") == pii::redact("My NI number is QQ 12 34 56 C, thanks"));
    CHECK(str_at(a.out, "content.text").find("[NINO]") != std::string::npos);
    CHECK(str_at(a.out, "occurred.date") == "2025-01");
    // Numbers: keep keeps the number; other transforms work on its text.
    const sb::detail::Leaf* due = a.out.data.find("amounts.due");
    REQUIRE(due);
    CHECK(due->type == SB_VALUE_INT);
    CHECK(due->i == 4210);
    CHECK(str_at(a.out, "citizen.phone2") == pii::mask("7700900313", 4));
    // Null stays null (nothing to reveal).
    const sb::detail::Leaf* middle = a.out.data.find("citizen.middle_name");
    REQUIRE(middle);
    CHECK(middle->type == SB_VALUE_NULL);
    // Categories travel with the leaves.
    CHECK(a.out.data.find("contact.phone")->category() == "contact.phone");
    CHECK(a.out.data.find("identifiers.nino")->category() == "identifier.nino");

    CHECK(decision_for(a.decisions, "contact.phone")->reason == "masked by profile revenues (contact.phone)");
    CHECK(decision_for(a.decisions, "identifiers.nino")->reason ==
          "hashed by profile revenues (identifiers.nino)");
    CHECK(decision_for(a.decisions, "content.text")->reason ==
          "redacted: NINO by profile revenues (content.text)");
    CHECK(decision_for(a.decisions, "citizen.address.postcode")->reason ==
          "generalised to postcode district by profile revenues (citizen.address.postcode)");
    CHECK(decision_for(a.decisions, "citizen.dob")->reason ==
          "generalised to age band by profile revenues (citizen.dob)");
    CHECK(decision_for(a.decisions, "occurred.date")->reason ==
          "generalised to month by profile revenues (occurred.date)");
    CHECK(decision_for(a.decisions, "citizen.middle_name")->reason ==
          "masked (null) by profile revenues (citizen.*)");
    CHECK(decision_for(a.decisions, "content.text")->action == Action::Redacted);
    CHECK(decision_for(a.decisions, "citizen.dob")->action == Action::Generalised);
    CHECK(decision_for(a.decisions, "identifiers.nino")->action == Action::Hashed);

    // Text without PII is redacted to itself.
    Applied clean = apply(p, Rec().str("content.text", "my bill is wrong", "content.free_text").r, false);
    CHECK(str_at(clean.out, "content.text") == "my bill is wrong");
    CHECK(clean.decisions[0].reason == "redacted: nothing found by profile revenues (content.text)");
}

TEST_CASE("profiles: a generalisation that cannot parse drops the leaf, never sends it raw") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    Rec r;
    r.str("citizen.address.postcode", "no fixed abode", "contact.postcode")
        .str("citizen.dob", "sometime in 1980", "identity.dob")
        .str("occurred.date", "last Tuesday", "meta.time")
        .str("citizen.name", "Jo", "identity.name")
        .null("citizen.dob2", "identity.dob");
    // A date of birth in the future is not one.
    Rec future;
    future.str("citizen.dob", "2031-01-01", "identity.dob");
    Applied a = apply(p, r.r, false);
    CHECK(a.out.data.json() ==
          R"({"id":null,"meta":{},"fields":{"citizen":{"dob2":null,"name":"Jo"}},"attachments":[]})");
    CHECK(decision_for(a.decisions, "citizen.address.postcode")->reason ==
          "dropped: not a postcode, by profile revenues (citizen.address.postcode)");
    CHECK(decision_for(a.decisions, "citizen.dob")->reason ==
          "dropped: not a date, by profile revenues (citizen.dob)");
    CHECK(decision_for(a.decisions, "occurred.date")->action == Action::Dropped);
    CHECK(apply(p, future.r, false).out.data.find("citizen.dob") == nullptr);
}

TEST_CASE("profiles: special category data needs a lawful basis on the route") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    CHECK(p.could_send_special());
    Rec r;
    r.str("special.health", "uses a wheelchair", "special.health")
        .str("content.text", "I have diabetes", "special.health") // a special category on a free-text path
        .str("notes.gp", "Dr Example", "special.health")           // named by no pattern
        .str("citizen.name", "Jo", "identity.name")
        .attach("recording", "file:///spool/a.wav", "special.biometric");

    Applied without = apply(p, r.r, false);
    CHECK(without.out.data.json() ==
          R"({"id":null,"meta":{},"fields":{"citizen":{"name":"Jo"}},"attachments":[]})");
    for (const char* path : {"special.health", "content.text", "attachments.recording"}) {
        const FieldDecision* d = decision_for(without.decisions, path);
        REQUIRE(d);
        CHECK(d->action == Action::Dropped);
        CHECK(d->reason == "dropped: special category (Art. 9) without a lawful basis on the route");
    }
    CHECK(decision_for(without.decisions, "special.health")->pattern == "special.health");
    CHECK(decision_for(without.decisions, "notes.gp")->reason ==
          "dropped: special category (Art. 9) without a lawful basis on the route");
    CHECK(decision_for(without.decisions, "notes.gp")->pattern.empty());

    Applied with = apply(p, r.r, true);
    CHECK(decision_for(with.decisions, "notes.gp")->reason == "dropped: not in profile revenues");
    CHECK(str_at(with.out, "special.health") == "uses a wheelchair");
    CHECK(str_at(with.out, "content.text") == "I have diabetes");
    CHECK(with.out.data.attachments().size() == 1);
}

TEST_CASE("profiles: attachments are default-denied and pass by reference with keep") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    Rec r;
    r.attach("recording", "file:///spool/call-1.wav", "media.voice")
        .attach("scan", "file:///spool/scan-1.pdf", "document.scan")
        .attach("selfie", "file:///spool/selfie.jpg", "media.image")
        .attach("", "file:///spool/unnamed.bin", "media.other");
    Applied a = apply(p, r.r, false);
    REQUIRE(a.out.data.attachments().size() == 1);
    const auto& sent = a.out.data.attachments()[0];
    CHECK(sent.name == "recording");
    CHECK(sent.uri == "file:///spool/call-1.wav");
    CHECK(sent.category == "media.voice");
    CHECK(a.out.data.json().find("scan-1") == std::string::npos);
    CHECK(a.out.data.json().find("selfie") == std::string::npos);
    CHECK(decision_for(a.decisions, "attachments.recording")->reason ==
          "kept (by reference) by profile revenues (attachments.recording)");
    CHECK(decision_for(a.decisions, "attachments.scan")->reason ==
          "dropped: attachments are sent by reference with keep only, not redact by profile revenues "
          "(attachments.scan)");
    CHECK(decision_for(a.decisions, "attachments.selfie")->reason == "dropped: not in profile revenues");
    CHECK(decision_for(a.decisions, "attachments.3")->action == Action::Dropped); // unnamed: by position
    CHECK(a.summary == "attachments.recording:keep");
}

TEST_CASE("profiles: the envelope keeps only what departments need, never vendor identifiers") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    Rec r;
    r.meta("id", "rec-1")
        .meta("source", "web-chat")
        .meta("channel", "web_chat")
        .meta("occurred_at", "2025-01-06T11:00:00Z")
        .meta("received_at", "2025-01-06T11:02:11Z")
        .meta("expires_at", "2025-02-03T11:02:11Z")
        .meta("category", "council_tax")
        .meta("external_id", "landbot-customer-500100512")
        .meta("subject_ref", "landbot:500100512");
    Applied a = apply(p, r.r, false);
    for (const char* key : {"id", "source", "channel", "occurred_at", "received_at", "expires_at", "category"})
        CHECK(a.out.data.meta(key) == std::string(r.r.data.meta(key)));
    CHECK(a.out.data.meta("external_id") == nullptr);
    CHECK(a.out.data.meta("subject_ref") == nullptr);
    CHECK(a.out.data.json().find("500100512") == std::string::npos);

    // The output is reset: applying into a used record leaves nothing behind.
    Rec other;
    other.meta("external_id", "x-1").str("citizen.name", "Jo", "identity.name");
    sb_record out = other.r;
    p.apply(Rec().str("hints.queue", "ctax", "meta.queue").r, out, false, kNow);
    CHECK(out.data.json() == R"({"id":null,"meta":{},"fields":{},"attachments":[]})");
}

TEST_CASE("profiles: decisions and the audit summary") {
    auto c = compile(kRevenues);
    REQUIRE(errors_of(*c).empty());
    const pipeline::Profile& p = *(*c)->profile("revenues");
    Rec r;
    r.str("citizen.name", "Gareth Pryce", "identity.name")
        .str("contact.phone", "07700900312", "contact.phone")
        .str("content.text", "card 4111 1111 1111 1111 and NI QQ123456C", "content.free_text")
        .str("hints.queue", "ctax", "meta.queue")
        .str("identifiers.nino", "QQ123456C", "identifier.nino");
    Applied a = apply(p, r.r, false);
    REQUIRE(a.decisions.size() == 5);
    auto line = [](const FieldDecision& d) {
        return d.path + " | " + d.category + " | " + pipeline::action_name(d.action) + " | " + d.pattern + " | " +
               d.transform + " | " + d.reason;
    };
    CHECK(line(a.decisions[0]) ==
          "citizen.name | identity.name | kept | citizen.name | keep | kept by profile revenues (citizen.name)");
    CHECK(line(a.decisions[1]) ==
          "contact.phone | contact.phone | masked | contact.phone | mask | masked by profile revenues (contact.phone)");
    CHECK(line(a.decisions[2]) == "content.text | content.free_text | redacted | content.text | redact | "
                                  "redacted: CARD, NINO by profile revenues (content.text)");
    CHECK(line(a.decisions[3]) == "hints.queue | meta.queue | dropped |  |  | dropped: not in profile revenues");
    CHECK(line(a.decisions[4]) == "identifiers.nino | identifier.nino | hashed | identifiers.nino | hash | "
                                  "hashed by profile revenues (identifiers.nino)");
    const std::string expected =
        "citizen.name:keep,contact.phone:mask,content.text:redact,identifiers.nino:hash";
    CHECK(a.summary == expected);
    CHECK(pipeline::Profile::summarise(a.decisions) == expected);
    CHECK(a.sent == 4);
    // No values in decisions or the summary.
    for (const auto& d : a.decisions)
        for (const char* value : {"Gareth", "0312", "4111", "QQ123456C"}) {
            CHECK(line(d).find(value) == std::string::npos);
            CHECK(a.summary.find(value) == std::string::npos);
        }
    // The delivery path: a summary without decisions.
    sb_record out;
    std::string summary;
    CHECK(p.apply(r.r, out, false, kNow, nullptr, &summary) == 4);
    CHECK(summary == expected);
    CHECK(out.data.json() == a.out.data.json());
}

TEST_CASE("profiles: with a hash key that cannot be read, hashed fields are dropped") {
    ::unsetenv("SB_POLICY_UNSET_KEY");
    auto c = compile(kInstances + R"(
[profiles.p]
hash_key = "env:SB_POLICY_UNSET_KEY"
[profiles.p.fields]
"identifiers.nino" = "hash"
"citizen.name" = "keep"
)");
    // resolve_secrets reports the variable; compile does not repeat it.
    std::string errors = errors_of(*c);
    CHECK(errors.find("profiles.p.hash_key: environment variable SB_POLICY_UNSET_KEY is not set") !=
          std::string::npos);
    CHECK(std::count(errors.begin(), errors.end(), '\n') == 1);
    Rec r;
    r.str("identifiers.nino", "QQ123456C", "identifier.nino").str("citizen.name", "Jo", "identity.name");
    Applied a = apply(*(*c)->profile("p"), r.r, false);
    CHECK(a.out.data.json() == R"({"id":null,"meta":{},"fields":{"citizen":{"name":"Jo"}},"attachments":[]})");
    CHECK(decision_for(a.decisions, "identifiers.nino")->reason == "dropped: profile p has no usable hash_key");
}

TEST_CASE("profiles: could_send_special") {
    auto c = compile(kInstances + R"(
[profiles.everything.fields]
"*" = "keep"
[profiles.health.fields]
"special.*" = "keep"
[profiles.one.fields]
"special.disability" = "mask"
[profiles.none.fields]
"citizen.*" = "keep"
"specialist.name" = "keep"
)");
    CHECK((*c)->profile("everything")->could_send_special());
    CHECK((*c)->profile("health")->could_send_special());
    CHECK((*c)->profile("one")->could_send_special());
    CHECK((*c)->profile("one")->special_patterns() == std::vector<std::string>{"special.disability"});
    CHECK_FALSE((*c)->profile("none")->could_send_special());
}

// ---------------------------------------------------------------------------
// Config checks that need more than one section

TEST_CASE("compile: cross-section config problems, each with file:line:column") {
    // Line numbers matter below: keep this text as it is.
    auto c = compile(R"([node]
data_dir = "data"

[sources.web-chat]
plugin = "landbot"

[destinations.revenues]
plugin = "zmq"
[destinations.social-care]
plugin = "zmq"
[destinations.archive]
plugin = "zmq"

[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "ctax"

[[classify.rule]]
category = "adult_care"
field = "content..text"
keywords = ["care"]

[[classify.rule]]
category = "adult_care"
field = "content.text"
keywords = ["care", " "]
source = "web-chats"

[[classify.rule]]
category = "noise"
field = "content.text"
contains = "zzz"

[[route]]
name = "ctax"
category = "council_tax"
destination = "revenues"
purpose = "council tax enquiry"
profile = "revenues"

[[route]]
name = "care"
category = ["adult_care", "adult-care"]
channel = ["phone", "pigeon"]
destination = "social-care"
purpose = "care assessment"
profile = "care"

[[route]]
name = "care-web"
category = "adult_care"
source = "web-chat"
destination = "social-care"
purpose = "care assessment"
profile = "care"
lawful_basis = "Art. 9(2)(h): health or social care"

[profiles.revenues.fields]
"citizen.name" = "keep"
"identifiers.nino" = "hash"
"identifiers.uprn" = "hash"
"attachments.*" = "mask"

[profiles.care]
hash_key = "env:SB_POLICY_TEST_KEY"
[profiles.care.fields]
"citizen.name" = "keep"
"special.*" = "keep"

[profiles.spare.fields]
"citizen.name" = "keep"
)");
    REQUIRE(c->policy != nullptr);
    CHECK(c->diagnostics.error_count() == 5);
    const std::vector<std::string> expected = {
        "<dir>/main.toml:11:1: warning: destinations.archive: no route sends records to this destination",
        "<dir>/main.toml:21:9: classify.rule[1].field: is not a field path (e.g. hints.queue, "
        "content.turns[*].text)",
        "<dir>/main.toml:27:12: classify.rule[2]: has an empty word or text, which would match every record",
        "<dir>/main.toml:28:10: warning: classify.rule[2].source: no source named 'web-chats' in [sources]; this "
        "rule never matches its records",
        "<dir>/main.toml:31:12: warning: classify.rule[3].category: no route takes category 'noise': its records "
        "go nowhere",
        "<dir>/main.toml:42:1: route[1]: sends profile 'care', which can pass special-category fields (special.*), "
        "but has no lawful_basis; name the UK GDPR Art. 9 condition in lawful_basis, or remove those fields from "
        "the profile",
        "<dir>/main.toml:44:12: warning: route[1].category: no [[classify.rule]] gives category 'adult-care', so "
        "this route never takes a record (categories: adult_care, council_tax, noise)",
        "<dir>/main.toml:45:11: warning: route[1].channel: unknown channel 'pigeon' (known: phone, web_chat, "
        "whatsapp, email, visit)",
        "<dir>/main.toml:54:15: route[2].destination: 'social-care' already receives category 'adult_care' from "
        "route[1] (care), so a record would be sent twice; make their categories, channels or sources disjoint",
        "<dir>/main.toml:61:22: profiles.revenues.hash_key: missing: fields identifiers.nino, identifiers.uprn use "
        "hash, which needs the profile's hash_key (a secret: \"env:NAME\" or \"file:PATH\")",
        "<dir>/main.toml:63:19: warning: profiles.revenues.fields.\"attachments.*\": attachments are sent by "
        "reference with keep, or not at all: 'mask' drops them",
        "<dir>/main.toml:71:1: warning: profiles.spare: is not used by any route",
    };
    CHECK(c->lines == expected);
}

TEST_CASE("compile: never throws on a broken config, and reports blank lawful bases") {
    auto c = compile(kInstances + R"(
[[classify.rule]]
category = "a"
field = "x"
regex = "([unclosed"

[[classify.rule]]
category = 5
field = "x"
equals = "y"

[[classify.rule]]
field = "x"

[[route]]
category = 7
destination = "nowhere"
purpose = "p"
profile = "missing"

[[route]]
category = "a"
destination = "review"
purpose = "p"
profile = "health"
lawful_basis = "   "

[profiles.health]
version = "two"
[profiles.health.fields]
"special.health" = "keep"
"citizen.name" = "mask:x"
"a..b" = "keep"
"a[99999999]" = "keep"

[profiles.broken]
fields = 3
)");
    REQUIRE(c->policy != nullptr);
    CHECK(c->diagnostics.has_errors());
    std::string errors = errors_of(*c);
    CHECK(errors.find("route[1]: sends profile 'health', which can pass special-category fields (special.health), "
                      "but has no lawful_basis") != std::string::npos);
    // The rules that compiled still work.
    CHECK((*c)->profile("health")->rule_for("special.health") != nullptr);
    CHECK((*c)->profile("health")->rule_for("citizen.name") == nullptr);
    CHECK((*c)->profile("health")->version() == 1);
    CHECK((*c)->classifier().rules().empty());
}

// ---------------------------------------------------------------------------
// explain

TEST_CASE("explain: the exact report for a small case") {
    auto c = compile(kInstances + R"toml(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "Council Tax"

[[classify.rule]]
category = "missed_bin"
field = "content.text"
keywords = ["missed bin"]

[[route]]
name = "ctax-revenues"
category = "council_tax"
destination = "revenues"
purpose = "answer the council tax enquiry"
profile = "revenues"

[[route]]
name = "ctax-review"
category = ["council_tax", "unclassified"]
channel = "web_chat"
destination = "review"
purpose = "quality review of chats"
profile = "review"
lawful_basis = "Art. 9(2)(g): substantial public interest"

[[route]]
name = "bins"
category = "missed_bin"
destination = "waste"
purpose = "collect the missed bin"
profile = "waste"

[[route]]
name = "care"
category = "*"
channel = "visit"
destination = "social-care"
purpose = "visits log"
profile = "waste"

[profiles.revenues]
version = 2
[profiles.revenues.fields]
"citizen.name" = "keep"
"citizen.address.postcode" = "generalise:postcode"
"contact.phone" = "mask"
"content.text" = "redact"

[profiles.review]
[profiles.review.fields]
"content.*" = "redact"
"special.*" = "keep"

[profiles.waste.fields]
"citizen.address.*" = "keep"
)toml");
    REQUIRE(errors_of(*c).empty());
    Rec r;
    r.meta("id", "rec-0001")
        .meta("source", "web-chat")
        .meta("channel", "web_chat")
        .meta("external_id", "lb-500100512")
        .str("citizen.name", "Gareth Pryce", "identity.name")
        .str("citizen.address.postcode", "L8 0ZZ", "contact.postcode")
        .str("contact.phone", "07700900312", "contact.phone")
        .str("content.text", "My NI number is QQ 12 34 56 C", "content.free_text")
        .str("hints.queue", "Council Tax", "meta.queue")
        .str("special.disability", "wheelchair user", "special.disability");
    // The redacted text is whatever pii::redact makes of it; the rest is fixed.
    const std::string redacted = pii::redact("My NI number is QQ 12 34 56 C");
    std::string expected = R"txt(record    rec-0001
source    web-chat
channel   web_chat
category  council_tax, by classify.rule[0] (hints.queue equals "Council Tax")

routes taken: 2
  ROUTE          DESTINATION  PURPOSE                         PROFILE     LAWFUL BASIS
  ctax-revenues  revenues     answer the council tax enquiry  revenues@2  -
  ctax-review    review       quality review of chats         review@1    Art. 9(2)(g): substantial public interest

to revenues by route ctax-revenues (profile revenues@2)
  payload  {"id":"rec-0001","meta":{"source":"web-chat","channel":"web_chat","category":"council_tax"},"fields":{"citizen":{"address":{"postcode":"L8"},"name":"Gareth Pryce"},"contact":{"phone":"*******0312"},"content":{"text":"<REDACTED>"}},"attachments":[]}
  sent     citizen.address.postcode:generalise:postcode,citizen.name:keep,contact.phone:mask,content.text:redact
  FIELD                     CATEGORY            ACTION       WHY
  citizen.address.postcode  contact.postcode    generalised  generalised to postcode district by profile revenues (citizen.address.postcode)
  citizen.name              identity.name       kept         kept by profile revenues (citizen.name)
  contact.phone             contact.phone       masked       masked by profile revenues (contact.phone)
  content.text              content.free_text   redacted     redacted: NINO by profile revenues (content.text)
  hints.queue               meta.queue          dropped      dropped: not in profile revenues
  special.disability        special.disability  dropped      dropped: special category (Art. 9) without a lawful basis on the route

to review by route ctax-review (profile review@1)
  payload  {"id":"rec-0001","meta":{"source":"web-chat","channel":"web_chat","category":"council_tax"},"fields":{"content":{"text":"<REDACTED>"},"special":{"disability":"wheelchair user"}},"attachments":[]}
  sent     content.text:redact,special.disability:keep
  FIELD                     CATEGORY            ACTION    WHY
  citizen.address.postcode  contact.postcode    dropped   dropped: not in profile review
  citizen.name              identity.name       dropped   dropped: not in profile review
  contact.phone             contact.phone       dropped   dropped: not in profile review
  content.text              content.free_text   redacted  redacted: NINO by profile review (content.*)
  hints.queue               meta.queue          dropped   dropped: not in profile review
  special.disability        special.disability  kept      kept by profile review (special.*)

receive nothing: 2
  social-care  no route for category council_tax on channel web_chat
  waste        no route for category council_tax
)txt";
    for (auto at = expected.find("<REDACTED>"); at != std::string::npos; at = expected.find("<REDACTED>"))
        expected.replace(at, 10, redacted);
    CHECK(pipeline::explain(**c, r.r, kNow, (*c)->destinations()) == expected);

    Rec u;
    u.meta("id", "rec-0002").meta("source", "front-desk").meta("channel", "visit");
    u.str("content.text", "a pothole on my road", "content.free_text");
    CHECK(pipeline::explain(**c, u.r, kNow, (*c)->destinations()) == R"txt(record    rec-0002
source    front-desk
channel   visit
category  unclassified: no rule matched

routes taken: 0

receive nothing: 4
  revenues     no route for category unclassified
  review       no route for category unclassified on channel visit
  social-care  no route for category unclassified ("*" never takes unclassified records)
  waste        no route for category unclassified
)txt");
}

// ---------------------------------------------------------------------------
// Property: default deny holds for many random records

namespace {

const std::string kPropertyProfiles = R"toml(
[[classify.rule]]
category = "council_tax"
field = "hints.queue"
equals = "ctax"

[[classify.rule]]
category = "waste"
field = "content.turns[*].text"
keywords = ["bin"]

[[route]]
category = "council_tax"
destination = "revenues"
purpose = "p"
profile = "revenues"
lawful_basis = "Art. 9(2)(g)"

[[route]]
category = "*"
destination = "waste"
purpose = "p"
profile = "minimal"

[[route]]
category = "unclassified"
destination = "review"
purpose = "p"
profile = "wide"

[[route]]
category = ["waste", "council_tax"]
destination = "social-care"
purpose = "p"
profile = "health"
lawful_basis = "Art. 9(2)(h)"

[profiles.revenues]
hash_key = "env:SB_POLICY_TEST_KEY"
[profiles.revenues.fields]
"citizen.name" = "keep"
"citizen.*" = "mask"
"citizen.address.postcode" = "generalise:postcode"
"citizen.dob" = "generalise:age_band"
"contact.phone" = "mask"
"contact.email" = "mask:3"
"identifiers.nino" = "hash"
"content.text" = "redact"
"content.turns[*].text" = "redact"
"content.turns[0].author" = "keep"
"occurred.date" = "generalise:month"
"special.health" = "keep"
"amounts.*" = "keep"
"attachments.recording" = "keep"

[profiles.health.fields]
"special.*" = "keep"
"citizen.name" = "keep"
"content.turns[*].text" = "redact"

[profiles.minimal.fields]
"citizen.address.postcode" = "generalise:postcode"
"content.turns[*].author" = "keep"
"content.turns[2].text" = "mask:2"

[profiles.wide]
hash_key = "env:SB_POLICY_TEST_KEY"
[profiles.wide.fields]
"citizen.*" = "keep"
"content.*" = "keep"
"attachments.*" = "keep"
"identifiers.*" = "hash"
)toml";

// The most specific matching rule, found without the profile's index.
const pipeline::FieldRule* brute_force_rule(const pipeline::Profile& p, std::string_view path) {
    const pipeline::FieldRule* best = nullptr;
    for (const auto& r : p.rules())
        if (r.pattern.matches(path) && (!best || r.pattern.specificity() > best->pattern.specificity())) best = &r;
    return best;
}

bool special(std::string_view category) { return category.starts_with("special."); }

} // namespace

TEST_CASE("property: random records never leak undeclared fields, special data or vendor ids") {
    auto c = compile(kInstances + kPropertyProfiles);
    REQUIRE(errors_of(*c).empty());
    const Policy& policy = **c;

    const std::vector<std::string> paths = {
        "citizen.name",  "citizen.title", "citizen.dob",      "citizen.address.postcode", "citizen.address.line1",
        "contact.phone", "contact.email", "identifiers.nino", "identifiers.uprn",         "content.text",
        "occurred.date", "special.health", "special.ethnicity", "amounts.due",           "hints.queue",
        "hints.agent",   "vendor.session", "notes",            "special",                 "citizen2.name"};
    const std::vector<const char*> categories = {"identity.name",     "contact.phone",      "content.free_text",
                                                 "special.health",    "special.ethnicity",  "special.disability",
                                                 "meta.queue",        "financial.amount",   "unknown"};
    const std::vector<const char*> attachment_names = {"recording", "scan", "photo", ""};

    std::mt19937_64 rng(20250106);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
    std::uint64_t counter = 0;
    std::vector<std::string> failures;
    auto fail = [&](std::string what) {
        if (failures.size() < 20) failures.push_back(std::move(what));
    };
    std::size_t applied = 0, leaves_checked = 0, canaries_checked = 0;

    for (int n = 0; n < 3000; ++n) {
        Rec r;
        r.meta("id", "rec-" + std::to_string(n))
            .meta("source", n % 2 ? "web-chat" : "phone-line")
            .meta("channel", n % 3 ? "web_chat" : "phone")
            .meta("external_id", "VENDORID" + std::to_string(n) + "X")
            .meta("subject_ref", "SUBJECTREF" + std::to_string(n) + "X");
        std::size_t count = 1 + pick(24);
        for (std::size_t k = 0; k < count; ++k) {
            std::string path;
            switch (pick(4)) {
            case 0: path = "content.turns[" + std::to_string(pick(6)) + "]." + (pick(2) ? "text" : "author"); break;
            case 1: path = "k" + std::to_string(pick(50)) + (pick(2) ? ".v" : "[" + std::to_string(pick(3)) + "]"); break;
            default: path = paths[pick(paths.size())];
            }
            const char* category = categories[pick(categories.size())];
            ++counter;
            sb_value v{};
            std::string text;
            switch (pick(8)) {
            case 0: v = {SB_VALUE_INT, nullptr, 0, static_cast<std::int64_t>(9'100'000'000'000 + counter), 0}; break;
            case 1: v = {SB_VALUE_NULL, nullptr, 0, 0, 0}; break;
            case 2: text = pick(2) ? "ctax" : "a missed bin today"; [[fallthrough]];
            default:
                if (text.empty()) text = "CANARY" + std::to_string(counter) + "Z";
                v = {SB_VALUE_STRING, text.data(), text.size(), 0, 0};
            }
            (void)r.r.data.set(path, v, category); // a path clashing with an earlier one is refused: fine
        }
        for (std::size_t k = pick(3); k > 0; --k)
            r.attach(attachment_names[pick(attachment_names.size())],
                     ("file:///spool/CANARY" + std::to_string(++counter) + "Z").c_str(),
                     categories[pick(categories.size())]);

        // Routing: an unclassified record only goes where "unclassified" is named.
        auto decision = policy.decide(r.r);
        if (decision.classified.category == "unclassified")
            for (const auto* route : decision.routes)
                if (std::find(route->categories.begin(), route->categories.end(), "unclassified") ==
                    route->categories.end())
                    fail("unclassified record " + std::to_string(n) + " taken by " + route->label);

        for (const auto& [name, profile] : policy.profiles())
            for (bool lawful : {false, true}) {
                sb_record out;
                profile.apply(r.r, out, lawful, kNow);
                ++applied;
                const std::string& json = out.data.json();
                const std::string where = " (record " + std::to_string(n) + ", profile " + name +
                                          (lawful ? ", lawful)" : ", no lawful basis)");
                for (const auto& leaf : out.data.leaves()) {
                    ++leaves_checked;
                    if (!brute_force_rule(profile, leaf.path())) fail("undeclared leaf sent: " + leaf.path() + where);
                    if (!lawful && special(leaf.category())) fail("special leaf sent: " + leaf.path() + where);
                }
                for (const auto& a : out.data.attachments())
                    if (!lawful && special(a.category)) fail("special attachment sent: " + a.name + where);
                for (const char* vendor : {"VENDORID", "SUBJECTREF"})
                    if (json.find(vendor) != std::string::npos) fail(std::string("vendor id sent") + where);

                // Canaries of leaves that must not go out, as they are, in any form of the payload.
                for (const auto& leaf : r.r.data.leaves()) {
                    const pipeline::FieldRule* rule = brute_force_rule(profile, leaf.path());
                    if (rule != profile.rule_for(leaf.path()) &&
                        !(rule && profile.rule_for(leaf.path()) &&
                          rule->pattern.specificity() == profile.rule_for(leaf.path())->pattern.specificity()))
                        fail("index disagrees with brute force for " + leaf.path() + where);
                    bool must_hide = !rule || (!lawful && special(leaf.category())) ||
                                     (rule->transform != pipeline::Transform::Keep &&
                                      rule->transform != pipeline::Transform::Redact &&
                                      rule->transform != pipeline::Transform::Mask);
                    if (!must_hide) continue;
                    // Only unique values are canaries ("ctax" may also be in a declared field).
                    std::string canary = leaf.type == SB_VALUE_STRING && leaf.str.starts_with("CANARY") ? leaf.str
                                         : leaf.type == SB_VALUE_INT ? std::to_string(leaf.i)
                                                                     : std::string();
                    if (canary.empty()) continue;
                    ++canaries_checked;
                    if (json.find(canary) != std::string::npos) fail("value of " + leaf.path() + " leaked" + where);
                }
                for (std::size_t k = 0; k < r.r.data.attachments().size(); ++k) {
                    const auto& a = r.r.data.attachments()[k];
                    // Unnamed attachments are addressed by position.
                    std::string path = "attachments." + (a.name.empty() ? std::to_string(k) : a.name);
                    const pipeline::FieldRule* rule = brute_force_rule(profile, path);
                    bool must_hide = !rule || rule->transform != pipeline::Transform::Keep ||
                                     (!lawful && special(a.category));
                    ++canaries_checked;
                    if (must_hide && json.find(a.uri) != std::string::npos)
                        fail("attachment " + path + " leaked" + where);
                }
            }
    }
    INFO(applied << " payloads, " << leaves_checked << " sent leaves, " << canaries_checked << " canaries");
    CHECK(failures == std::vector<std::string>{});
    CHECK(applied == 3000 * 4 * 2);
    CHECK(leaves_checked > 10'000);
    CHECK(canaries_checked > 100'000);
}

// ---------------------------------------------------------------------------
// Benchmarks (hidden: run with `policy_test "[.bench]"`)

TEST_CASE("bench: classify and apply on a typical 20-field record", "[.bench]") {
    auto c = compile(kRevenues + R"toml(
[[classify.rule]]
category = "waste"
field = "content.turns[*].text"
keywords = ["missed bin", "recycling", "fly-tipping", "garden waste", "bulky"]

[[classify.rule]]
category = "parking"
field = "hints.ref"
regex = "^PCN[0-9]{6}$"

[[route]]
category = "waste"
destination = "waste"
purpose = "p"
profile = "keeps"

[profiles.keeps.fields]
"citizen.*" = "keep"
"contact.*" = "keep"
"content.*" = "keep"
"identifiers.*" = "keep"
)toml");
    REQUIRE(errors_of(*c).empty());
    const Policy& policy = **c;
    Rec r;
    r.meta("id", "rec-1").meta("source", "web-chat").meta("channel", "web_chat")
        .meta("received_at", "2025-01-06T11:02:11Z").meta("expires_at", "2025-02-03T11:02:11Z")
        .str("citizen.name", "Gareth Pryce", "identity.name")
        .str("citizen.title", "Mr", "identity.title")
        .str("citizen.dob", "1980-05-17", "identity.dob")
        .str("citizen.address.line1", "1 Example Street", "contact.address")
        .str("citizen.address.postcode", "L8 0ZZ", "contact.postcode")
        .str("contact.phone", "07700900312", "contact.phone")
        .str("contact.email", "gareth@example.org", "contact.email")
        .str("identifiers.nino", "QQ123456C", "identifier.nino")
        .str("hints.queue", "Council Tax", "meta.queue")
        .str("vendor.session", "sess-0001", "meta.session");
    const char* turns[] = {"Which of these is your question about?", "council tax - my bill is wrong",
                           "my NI number is QQ 12 34 56 C", "can I pay the arrears now?",
                           "An adviser will call you on 0151 496 0732."};
    for (int i = 0; i < 5; ++i) {
        r.str("content.turns[" + std::to_string(i) + "].text", turns[i], "content.free_text");
        r.str("content.turns[" + std::to_string(i) + "].author", i % 2 ? "citizen" : "bot", "content.author");
    }
    REQUIRE(r.r.data.leaves().size() == 20);

    auto time = [](const char* what, int n, auto&& body) {
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < n; ++i) body();
        auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
        std::printf("%-58s %8.0f ns/op  (%.0f/s)\n", what, double(ns) / n, 1e9 * n / double(ns));
    };
    const pipeline::Profile& revenues = *policy.profile("revenues");
    const pipeline::Profile& keeps = *policy.profile("keeps");
    sb_record out;
    std::string summary;
    std::vector<FieldDecision> decisions;
    volatile std::size_t sink = 0;
    time("classify (no rule matches: all 3 rules tried)", 200'000,
         [&] { sink = sink + policy.classifier().classify(r.r).category.size(); });
    time("rule_for x20 (pattern lookup only)", 200'000, [&] {
        for (const auto& l : r.r.data.leaves()) sink = sink + (revenues.rule_for(l.path()) != nullptr);
    });
    time("apply, keep-only profile (no pii work)", 100'000, [&] { sink = sink + keeps.apply(r.r, out, false, kNow); });
    time("apply, revenues profile (mask/hash/redact/generalise)", 100'000,
         [&] { sink = sink + revenues.apply(r.r, out, false, kNow); });
    time("apply, revenues profile + audit summary", 100'000,
         [&] { sink = sink + revenues.apply(r.r, out, false, kNow, nullptr, &summary); });
    time("apply, revenues profile + decisions (explain)", 50'000,
         [&] { sink = sink + revenues.apply(r.r, out, false, kNow, &decisions, &summary); });
    time("pii::redact x5 turns (for reference)", 100'000, [&] {
        for (const char* t : turns) sink = sink + pii::redact(t).size();
    });
    CHECK(sink > 0);
}
