// Interned path and category atoms of records (detail/record_data.hpp): one
// atom per path, the bound of the intern table (paths it has no room for are
// owned by the record, and stay correct through copies, profiles and the
// store codec), and interning from several threads at once.
#include <catch2/catch.hpp>

#include "pipeline/profile.hpp"
#include "store/codec.hpp"
#include "util/shared_text.hpp"

#include <switchboard/detail/record_data.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace pipeline = switchboard::pipeline;
namespace store = switchboard::store;

namespace {

using sb::detail::InternLimits;
using sb::detail::Leaf;
using sb::detail::RecordData;

sb_status set_str(RecordData& r, const std::string& path, std::string_view v, const char* cat = nullptr) {
    sb_value x{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
    return r.set(path, x, cat);
}

sb_status set_int(RecordData& r, const std::string& path, std::int64_t v, const char* cat = nullptr) {
    sb_value x{SB_VALUE_INT, nullptr, 0, v, 0};
    return r.set(path, x, cat);
}

std::string fields_json(const RecordData& r) {
    std::string out;
    r.write_fields_json(out);
    return out;
}

// The table limited to what it holds now plus `paths` paths and `categories`
// categories, for the scope; the defaults after.
struct LimitedTable {
    LimitedTable(std::size_t paths, std::size_t categories) {
        auto now = sb::detail::intern_stats();
        InternLimits l;
        l.paths = now.paths + paths;
        l.categories = now.categories + categories;
        sb::detail::set_intern_limits_for_testing(l);
    }
    ~LimitedTable() { sb::detail::set_intern_limits_for_testing(InternLimits{}); }
};

pipeline::Profile profile(const char* name, const char* toml_text) {
    toml::table t = toml::parse(toml_text);
    switchboard::config::Diagnostics diags;
    auto p = pipeline::Profile::compile(name, t, nullptr, diags);
    REQUIRE_FALSE(diags.has_errors());
    return p;
}

// A profile sending every leaf as it is.
pipeline::Profile keep_all() { return profile("all", R"(fields = { "*" = "keep" })"); }

} // namespace

TEST_CASE("atoms: one interned atom per path and per category") {
    RecordData a, b;
    REQUIRE(set_str(a, "atoms.citizen.address.postcode", "CF10 1AA", "contact.postcode") == SB_OK);
    REQUIRE(set_str(b, "atoms.citizen.address.postcode", "SA1 1AA", "contact.postcode") == SB_OK);
    REQUIRE(set_int(b, "atoms.turns[02].n", 7) == SB_OK); // not canonical
    REQUIRE(set_int(a, "atoms.turns[2].n", 8) == SB_OK);

    const Leaf* pa = a.find("atoms.citizen.address.postcode");
    const Leaf* pb = b.find("atoms.citizen.address.postcode");
    REQUIRE(pa);
    REQUIRE(pb);
    CHECK(pa->path_atom() == pb->path_atom());
    CHECK(pa->path_atom()->interned);
    CHECK(pa->category_atom() == pb->category_atom());
    CHECK(pa->category() == "contact.postcode");

    // Any spelling of a path finds the canonical atom.
    const Leaf* na = a.find("atoms.turns[2].n");
    const Leaf* nb = b.find("atoms.turns[002].n");
    REQUIRE(na);
    REQUIRE(nb);
    CHECK(na->path_atom() == nb->path_atom());
    CHECK(nb->path() == "atoms.turns[2].n");
    REQUIRE(nb->segments().size() == 4);
    CHECK(nb->segments()[1].key == "turns");
    CHECK(nb->segments()[2].index == 2);
    // No category: "unknown", one atom.
    CHECK(na->category() == "unknown");
    CHECK(na->category_atom() == nb->category_atom());

    // Looking a path up interns nothing.
    auto before = sb::detail::intern_stats();
    CHECK(a.find("atoms.never.set") == nullptr);
    CHECK(sb::detail::intern_stats().paths == before.paths);
    // Invalid paths are refused and not interned.
    CHECK(set_str(a, "atoms..bad", "x") == SB_ERR_INVALID);
    CHECK(set_str(a, "atoms.bad[", "x") == SB_ERR_INVALID);
    CHECK(sb::detail::intern_stats().paths == before.paths);
}

TEST_CASE("atoms: when the table is full, the record owns new paths and categories") {
    // Two paths and one category of room.
    std::unique_ptr<sb_record> src = std::make_unique<sb_record>();
    RecordData& r = src->data;
    {
        LimitedTable limit(2, 1);
        REQUIRE(set_str(r, "bound.a", "one", "bound.cat.1") == SB_OK);
        REQUIRE(set_str(r, "bound.b[0]", "two", "bound.cat.2") == SB_OK);
        REQUIRE(set_str(r, "bound.b[1].x", "three", "bound.cat.2") == SB_OK);
        REQUIRE(set_int(r, "bound.c.d", 4, "bound.cat.3") == SB_OK);
        REQUIRE(set_str(r, "bound.b[3].y", "five", "unknown") == SB_OK); // out of order
        REQUIRE(set_str(r, "bound.b[1].x", "three again", "bound.cat.2") == SB_OK); // overwrite
        // Conflicts are still found against owned atoms.
        CHECK(set_str(r, "bound.b[1]", "x") == SB_ERR_INVALID);
        CHECK(set_str(r, "bound.c", "x") == SB_ERR_INVALID);
        CHECK(set_str(r, "bound.b.k", "x") == SB_ERR_INVALID);
        // The table is full: a byte bound too.
        auto now = sb::detail::intern_stats();
        InternLimits bytes;
        bytes.path_bytes = now.path_bytes;
        sb::detail::set_intern_limits_for_testing(bytes);
        REQUIRE(set_str(r, "bound.e", "six") == SB_OK);
        CHECK(sb::detail::intern_stats().paths == now.paths);
    }
    CHECK(r.find("bound.a")->path_atom()->interned);
    CHECK(r.find("bound.b[0]")->path_atom()->interned);
    CHECK_FALSE(r.find("bound.b[1].x")->path_atom()->interned);
    CHECK_FALSE(r.find("bound.c.d")->path_atom()->interned);
    CHECK_FALSE(r.find("bound.e")->path_atom()->interned);
    CHECK(r.find("bound.a")->category_atom()->interned);
    CHECK_FALSE(r.find("bound.b[0]")->category_atom()->interned);
    CHECK(r.find("bound.b[3].y")->category_atom()->interned); // "unknown" is always there

    const std::string fields =
        R"({"bound":{"a":"one","b":["two",{"x":"three again"},null,{"y":"five"}],"c":{"d":4},"e":"six"}})";
    CHECK(fields_json(r) == fields);
    const Leaf* x = r.find("bound.b[1].x");
    REQUIRE(x);
    CHECK(x->str == "three again");
    CHECK(x->category() == "bound.cat.2");
    CHECK(r.find("bound.b[01].x") == x);
    sb_field f{};
    f.struct_size = sizeof f;
    REQUIRE(sb::detail::record_get(src.get(), "bound.c.d", &f) == SB_OK);
    CHECK(std::string(f.path) == "bound.c.d");
    CHECK(std::string(f.category) == "bound.cat.3");

    // Copies made while the source lives must survive it.
    RecordData copied; // a profile-like copy, leaf by leaf
    for (const Leaf& l : r.leaves()) copied.append_copy(l);
    sb_record assigned = *src; // copy construction
    sb_record profiled;
    keep_all().apply(*src, profiled, true, 0);
    std::string encoded;
    store::encode(*src, encoded);
    const std::string json = r.json();

    src.reset();
    CHECK(fields_json(copied) == fields);
    CHECK(copied.find("bound.c.d")->category() == "bound.cat.3");
    CHECK_FALSE(copied.find("bound.c.d")->path_atom()->interned);
    CHECK(assigned.data.json() == json);
    CHECK(assigned.data.find("bound.b[1].x")->category() == "bound.cat.2");
    CHECK(fields_json(profiled.data) == fields);
    CHECK(profiled.data.find("bound.e")->str == "six");

    // Copy assignment over a record that owns atoms of its own.
    sb_record again;
    {
        LimitedTable limit(0, 0);
        REQUIRE(set_str(again.data, "bound.z.own", "z", "bound.cat.z") == SB_OK);
        CHECK_FALSE(again.data.find("bound.z.own")->path_atom()->interned);
        again = assigned;
    }
    CHECK(again.data.json() == json);
    CHECK(again.data.find("bound.z.own") == nullptr);

    // The store codec reads owned paths back into owned atoms of the record.
    sb_record back;
    {
        LimitedTable limit(0, 0);
        std::size_t pos = 0;
        REQUIRE(store::decode(encoded, pos, back));
        CHECK(pos == encoded.size());
    }
    CHECK(back.data.json() == json);
    CHECK(back.data.find("bound.b[1].x")->category() == "bound.cat.2");
    CHECK_FALSE(back.data.find("bound.c.d")->path_atom()->interned);
    CHECK(back.data.find("bound.a")->path_atom()->interned);
}

TEST_CASE("atoms: a shape (ABI 1.2) registered when the table is full owns its atoms, and its records copy them") {
    const char* paths[] = {"shape.full.b", "shape.full.a", "shape.full.c[0]"};
    const char* cats[] = {"shape.cat.1", "shape.cat.2", "shape.cat.2"};
    sb_shape* shape = nullptr;
    {
        LimitedTable limit(1, 0); // room for one of the paths, none of the categories
        shape = sb::detail::shape_new(paths, cats, 3);
    }
    REQUIRE(shape);
    const sb_value values[] = {{SB_VALUE_STRING, "bee", 3, 0, 0},
                               {SB_VALUE_STRING, "a string longer than the small-string buffer", 44, 0, 0},
                               {SB_VALUE_INT, nullptr, 0, 3, 0}};
    auto record = std::make_unique<sb_record>();
    REQUIRE(sb::detail::record_set_shape(record.get(), shape, values) == SB_OK);
    sb::detail::shape_free(shape); // the record keeps copies of what the shape owned

    const RecordData& r = record->data;
    REQUIRE(r.leaves().size() == 3);
    int owned = 0;
    for (const Leaf& l : r.leaves()) {
        owned += !l.path_atom()->interned;
        CHECK_FALSE(l.category_atom()->interned);
    }
    CHECK(owned == 2);
    CHECK(r.find("shape.full.a")->category() == "shape.cat.2");
    CHECK(r.find("shape.full.b")->category() == "shape.cat.1");
    CHECK(r.find("shape.full.c[0]")->i == 3);
    CHECK(fields_json(r) ==
          R"({"shape":{"full":{"a":"a string longer than the small-string buffer","b":"bee","c":[3]}}})");
    // Through a copy and the store codec as well.
    RecordData copy = r;
    CHECK(fields_json(copy) == fields_json(r));
    std::string encoded;
    store::encode(*record, encoded);
    const std::string json = fields_json(r);
    record.reset();
    CHECK(fields_json(copy) == json);
    sb_record decoded;
    std::size_t pos = 0;
    REQUIRE(store::decode(encoded, pos, decoded));
    CHECK(fields_json(decoded.data) == json);
}

TEST_CASE("atoms: records built on several threads at once") {
    constexpr int kThreads = 4, kRecords = 300, kShared = 40;
    // Shared paths, in and out of order, and paths of one thread only; false
    // if a set() failed (no Catch2 assertions off the main thread).
    auto build = [](RecordData& r, const std::string& prefix, int t, int n) {
        bool ok = true;
        for (int k = kShared - 1; k >= 0; --k)
            ok &= set_int(r, prefix + ".shared[" + std::to_string(k) + "].v", k, "mt.cat") == SB_OK;
        for (int k = 0; k < 5; ++k)
            ok &= set_str(r, prefix + ".own_" + std::to_string(t) + ".f" + std::to_string((n + k) % 50), "v",
                          ("mt.cat." + std::to_string(k)).c_str()) == SB_OK;
        return ok;
    };
    // `limited`: the table fills up while the threads run.
    auto run = [&](const std::string& prefix, bool limited) {
        std::vector<std::vector<std::string>> got(kThreads);
        std::vector<const sb::detail::PathAtom*> first(kThreads);
        std::atomic<int> failed{0};
        std::atomic<bool> go{false};
        std::unique_ptr<LimitedTable> limit;
        if (limited) limit = std::make_unique<LimitedTable>(60, 2);
        std::vector<std::thread> threads;
        for (int t = 0; t < kThreads; ++t)
            threads.emplace_back([&, t] {
                while (!go) std::this_thread::yield();
                for (int n = 0; n < kRecords; ++n) {
                    RecordData r;
                    if (!build(r, prefix, t, n)) ++failed;
                    RecordData copy;
                    for (const Leaf& l : r.leaves()) copy.append_copy(l);
                    got[t].push_back(copy.json());
                    if (const Leaf* l = r.find(prefix + ".shared[7].v"); l && n == 0) first[t] = l->path_atom();
                }
            });
        go = true;
        for (auto& th : threads) th.join();
        limit.reset();
        CHECK(failed == 0);
        // The same records built on this thread, one by one.
        int differ = 0;
        for (int t = 0; t < kThreads; ++t)
            for (int n = 0; n < kRecords; ++n) {
                RecordData r;
                REQUIRE(build(r, prefix, t, n));
                const std::string& g = got[t][static_cast<std::size_t>(n)];
                if (g != r.json() && differ++ == 0) FAIL_CHECK("thread " << t << " record " << n << ": " << g);
            }
        CHECK(differ == 0);
        if (!limited)
            for (int t = 1; t < kThreads; ++t) CHECK(first[t] == first[0]);
    };
    SECTION("room for every path") { run("mt1", false); }
    SECTION("the table filling up meanwhile") { run("mt2", true); }
}

TEST_CASE("atoms: profiles remember their rule per path, each its own") {
    // Profiles decide per leaf through a per-thread cache keyed by profile
    // and path atom: several profiles over the same paths must not mix.
    const auto a = profile("a", R"(fields = { "rc.x" = "keep", "rc.y" = "redact" })");
    const auto b = profile("b", R"(fields = { "rc.y" = "keep", "rc.*" = "mask:1" })");
    const pipeline::Profile a_copy = a; // shares its id: the same rules
    sb_record in;
    REQUIRE(set_str(in.data, "rc.x", "xx") == SB_OK);
    REQUIRE(set_str(in.data, "rc.y", "yy") == SB_OK);
    REQUIRE(set_str(in.data, "rc.z", "zz") == SB_OK);
    for (int round = 0; round < 3; ++round) {
        for (const pipeline::Profile* p : {&a, &b, &a_copy}) {
            sb_record out;
            std::string summary;
            p->apply(in, out, false, 0, nullptr, &summary);
            if (p == &b)
                CHECK(summary == "rc.x:mask:1,rc.y:keep,rc.z:mask:1");
            else
                CHECK(summary == "rc.x:keep,rc.y:redact");
            CHECK(p->rule_for(*in.data.find("rc.z")) == p->rule_for("rc.z"));
        }
    }
    // A leaf whose path the record owns is decided by its text.
    sb_record owned;
    {
        LimitedTable limit(0, 0);
        REQUIRE(set_str(owned.data, "rc.owned", "o") == SB_OK);
    }
    REQUIRE_FALSE(owned.data.find("rc.owned")->path_atom()->interned);
    CHECK(b.rule_for(*owned.data.find("rc.owned")) == b.rule_for("rc.owned"));
    CHECK(a.rule_for(*owned.data.find("rc.owned")) == nullptr);
}

TEST_CASE("atoms: a record keeps its shape's id while its paths are the shape's") {
    const char* p1[] = {"sid.b", "sid.a"};
    const char* p2[] = {"sid.a", "sid.c"};
    sb_shape* s1 = sb::detail::shape_new(p1, nullptr, 2);
    sb_shape* s1_again = sb::detail::shape_new(p1, nullptr, 2);
    sb_shape* s2 = sb::detail::shape_new(p2, nullptr, 2);
    REQUIRE((s1 && s1_again && s2));
    const sb_value v[] = {{SB_VALUE_STRING, "one", 3, 0, 0}, {SB_VALUE_INT, nullptr, 0, 2, 0}};
    auto shaped = [&](sb_shape* s) {
        sb_record r;
        REQUIRE(sb::detail::record_set_shape(&r, s, v) == SB_OK);
        return r;
    };
    sb_record a = shaped(s1), b = shaped(s1), c = shaped(s1_again), d = shaped(s2);
    CHECK(a.data.shape_id() != 0);
    CHECK(a.data.shape_id() == b.data.shape_id());
    CHECK(c.data.shape_id() != a.data.shape_id()); // ids are per registration, never reused
    CHECK(d.data.shape_id() != a.data.shape_id());
    sb_record plain;
    REQUIRE(set_str(plain.data, "sid.a", "x") == SB_OK);
    CHECK(plain.data.shape_id() == 0);

    // Copies keep it, and so do changes of values only.
    sb_record copy = a;
    CHECK(copy.data.shape_id() == a.data.shape_id());
    for (Leaf& l : copy.data.mutable_leaves()) l.str = "changed";
    CHECK(copy.data.shape_id() == a.data.shape_id());
    // Any change of paths drops it, even one that ends with the same paths.
    sb_record set_again = a;
    REQUIRE(set_int(set_again.data, "sid.a", 9) == SB_OK);
    CHECK(set_again.data.shape_id() == 0);
    sb_record erased = a;
    CHECK(erased.data.erase("sid.b") == 1);
    CHECK(erased.data.shape_id() == 0);
    CHECK(erased.data.erase("sid.none") == 0);
    sb_record appended = a;
    appended.data.append_path_of(*d.data.find("sid.c"));
    CHECK(appended.data.shape_id() == 0);
    for (sb_shape* s : {s1, s1_again, s2}) sb::detail::shape_free(s);
}

TEST_CASE("atoms: profiles decide records of a shape as they decide the same record set field by field") {
    // Profiles memoise each leaf's rule per record shape and thread: two
    // profiles over records of two shapes, taking turns, and records whose
    // paths changed after they were set by shape, must not mix.
    const auto a = profile("a", R"(fields = { "ps.x" = "keep", "ps.y" = "redact" })");
    const auto b = profile("b", R"(fields = { "ps.y" = "keep", "ps.*" = "mask:1" })");
    const char* p1[] = {"ps.z", "ps.y", "ps.x"};
    const char* p2[] = {"ps.x", "ps.w"};
    sb_shape* s1 = sb::detail::shape_new(p1, nullptr, 3);
    sb_shape* s2 = sb::detail::shape_new(p2, nullptr, 2);
    REQUIRE((s1 && s2));
    const sb_value v[] = {{SB_VALUE_STRING, "aa", 2, 0, 0}, {SB_VALUE_STRING, "bb", 2, 0, 0},
                          {SB_VALUE_STRING, "cc", 2, 0, 0}};
    auto summary_of = [](const pipeline::Profile& p, const sb_record& in) {
        sb_record out;
        std::string summary;
        p.apply(in, out, false, 0, nullptr, &summary);
        return summary + " " + out.data.json().substr(out.data.json().find("\"fields\""));
    };
    auto by_fields = [&](const char* const* paths, std::size_t n) {
        sb_record r;
        for (std::size_t k = 0; k < n; ++k) REQUIRE(r.data.set(paths[k], v[k], nullptr) == SB_OK);
        return r;
    };
    sb_record r1, r2;
    REQUIRE(sb::detail::record_set_shape(&r1, s1, v) == SB_OK);
    REQUIRE(sb::detail::record_set_shape(&r2, s2, v) == SB_OK);
    const sb_record f1 = by_fields(p1, 3), f2 = by_fields(p2, 2);
    for (int round = 0; round < 3; ++round)
        for (const pipeline::Profile* p : {&a, &b})
            for (auto [shaped, plain] : {std::pair{&r1, &f1}, std::pair{&r2, &f2}}) {
                CHECK(summary_of(*p, *shaped) == summary_of(*p, *plain));
                CHECK(shaped->data.shape_id() != 0);
            }
    // More profiles than the memo has slots: some share one, and each still
    // gets its own rules.
    std::vector<pipeline::Profile> many;
    for (int i = 0; i < 80; ++i)
        many.push_back(profile("m", i % 2 ? R"(fields = { "ps.x" = "keep" })" : R"(fields = { "ps.y" = "keep" })"));
    for (int round = 0; round < 2; ++round)
        for (std::size_t i = 0; i < many.size(); ++i) {
            INFO("profile " << i);
            CHECK(summary_of(many[i], r1) == summary_of(many[i], f1));
            CHECK(summary_of(many[i], r1).starts_with(i % 2 ? "ps.x:keep " : "ps.y:keep "));
        }
    CHECK(summary_of(a, r1).starts_with("ps.x:keep,ps.y:redact "));
    CHECK(summary_of(b, r2).starts_with("ps.w:mask:1,ps.x:mask:1 "));
    // A record of shape 1 whose paths changed is decided by its own paths.
    sb_record changed = r1;
    REQUIRE(changed.data.erase("ps.x") == 1);
    REQUIRE(set_str(changed.data, "ps.w", "dd") == SB_OK);
    CHECK(summary_of(a, changed).starts_with("ps.y:redact "));
    CHECK(summary_of(b, changed).starts_with("ps.w:mask:1,ps.y:keep,ps.z:mask:1 "));
    sb::detail::shape_free(s1);
    sb::detail::shape_free(s2);
}

TEST_CASE("atoms: the store encodes a record of a shape as it encodes the same record set field by field") {
    // The encoder memoises the path and category bytes per record shape and
    // thread: more shapes than its slots, taking turns, must not mix.
    std::vector<std::vector<std::string>> path_sets;
    for (int i = 0; i < 24; ++i)
        path_sets.push_back({"enc.b" + std::to_string(i), "enc.a.x", "enc.a.y", "enc.list[1]", "enc.list[0]",
                             "enc.z" + std::to_string(i % 3)});
    const char* cats[] = {"c.one", "c.two", nullptr, "c.one", "c.three", "c.two"};
    std::vector<sb_shape*> shapes;
    for (const auto& ps : path_sets) {
        std::vector<const char*> p;
        for (const auto& s : ps) p.push_back(s.c_str());
        shapes.push_back(sb::detail::shape_new(p.data(), cats, p.size()));
        REQUIRE(shapes.back());
    }
    const sb_value v[] = {{SB_VALUE_STRING, "b", 1, 0, 0},  {SB_VALUE_INT, nullptr, 0, -5, 0},
                          {SB_VALUE_NULL, nullptr, 0, 0, 0}, {SB_VALUE_FLOAT, nullptr, 0, 0, 1.25},
                          {SB_VALUE_BOOL, nullptr, 0, 1, 0}, {SB_VALUE_STRING, "zed", 3, 0, 0}};
    for (int round = 0; round < 3; ++round)
        for (std::size_t i = 0; i < shapes.size(); ++i) {
            INFO("shape " << i << ", round " << round);
            sb_record shaped, plain;
            REQUIRE(sb::detail::record_set_shape(&shaped, shapes[i], v) == SB_OK);
            for (std::size_t k = 0; k < path_sets[i].size(); ++k)
                REQUIRE(plain.data.set(path_sets[i][k], v[k], cats[k]) == SB_OK);
            std::string a, b;
            store::encode(shaped, a);
            store::encode(plain, b);
            CHECK(a == b);
            CHECK(shaped.data.json() == plain.data.json()); // the JSON skeleton is memoised per shape too
            sb_record back;
            std::size_t pos = 0;
            REQUIRE(store::decode(a, pos, back));
            CHECK(back.data.json() == plain.data.json());
            // A value changed in place keeps the shape, and is encoded.
            sb_record changed = shaped;
            for (Leaf& l : changed.data.mutable_leaves())
                if (l.type == SB_VALUE_STRING) l.str = "changed";
            std::string c;
            store::encode(changed, c);
            pos = 0;
            sb_record back2;
            REQUIRE(store::decode(c, pos, back2));
            CHECK(back2.data.json().find("changed") != std::string::npos);
            CHECK(back2.data.json().find("zed") == std::string::npos);
        }
    for (sb_shape* s : shapes) sb::detail::shape_free(s);
}

TEST_CASE("atoms: a profile's copies of one shape share a shape, unless a value was dropped") {
    const auto p = profile("p", R"(fields = { "cs.when" = "generalise:month", "cs.name" = "keep", "cs.n[*]" = "keep" })");
    const char* paths[] = {"cs.name", "cs.when", "cs.other", "cs.n[0]", "cs.n[2]"};
    sb_shape* shape = sb::detail::shape_new(paths, nullptr, 5);
    REQUIRE(shape);
    auto copy_of = [&](std::string_view when) {
        const sb_value v[] = {{SB_VALUE_STRING, "Ann", 3, 0, 0}, {SB_VALUE_STRING, when.data(), when.size(), 0, 0},
                              {SB_VALUE_STRING, "x", 1, 0, 0}, {SB_VALUE_INT, nullptr, 0, 1, 0},
                              {SB_VALUE_BOOL, nullptr, 0, 0, 0}};
        sb_record in, out;
        REQUIRE(sb::detail::record_set_shape(&in, shape, v) == SB_OK);
        p.apply(in, out, false, 0);
        return out;
    };
    const sb_record a = copy_of("2025-01-06"), b = copy_of("2024-12-31");
    CHECK(a.data.shape_id() != 0);
    CHECK(a.data.shape_id() == b.data.shape_id());
    CHECK(a.data.json().find(R"("fields":{"cs":{"n":[1,null,false],"name":"Ann","when":"2025-01"}})") !=
          std::string::npos);
    CHECK(b.data.json().find(R"("when":"2024-12")") != std::string::npos);
    // Not a date: dropped, so this copy's paths are not the others'.
    const sb_record c = copy_of("soon");
    CHECK(c.data.shape_id() == 0);
    CHECK(c.data.json().find(R"("fields":{"cs":{"n":[1,null,false],"name":"Ann"}})") != std::string::npos);
    // And the next good one is the shape's again.
    CHECK(copy_of("2025-02-01").data.shape_id() == a.data.shape_id());

    // The summary of the fields sent (for the audit trail) is memoised per
    // shape as well: the same for every record that sent them all, its own
    // for one that lost a value, with attachments after the leaves.
    const auto p2 = profile("p2", R"(fields = { "cs.when" = "generalise:month", "cs.name" = "keep", "attachments.scan" = "keep" })");
    auto summary_of = [&](std::string_view when, bool attachment, bool with_memo_first) {
        const sb_value v[] = {{SB_VALUE_STRING, "Ann", 3, 0, 0}, {SB_VALUE_STRING, when.data(), when.size(), 0, 0},
                              {SB_VALUE_STRING, "x", 1, 0, 0}, {SB_VALUE_INT, nullptr, 0, 1, 0},
                              {SB_VALUE_BOOL, nullptr, 0, 0, 0}};
        sb_record in, out;
        REQUIRE(sb::detail::record_set_shape(&in, shape, v) == SB_OK);
        if (attachment) {
            sb_attachment a{};
            a.struct_size = sizeof a;
            a.name = "scan";
            a.uri = "file:///s";
            REQUIRE(in.data.add_attachment(a) == SB_OK);
        }
        std::string summary;
        if (with_memo_first) p2.apply(in, out, false, 0, nullptr, &summary);
        p2.apply(in, out, false, 0, nullptr, &summary);
        return summary;
    };
    for (int round = 0; round < 2; ++round) {
        CHECK(summary_of("2025-01-06", false, round == 0) == "cs.name:keep,cs.when:generalise:month");
        CHECK(summary_of("soon", false, false) == "cs.name:keep");
        CHECK(summary_of("2025-01-06", true, false) == "cs.name:keep,cs.when:generalise:month,attachments.scan:keep");
        CHECK(summary_of("soon", true, false) == "cs.name:keep,attachments.scan:keep");
    }
    sb::detail::shape_free(shape);
}

// Outbox entries carry their purpose and profile as shared texts: one copy
// of each text for the process, whichever thread asks, compared by content.
TEST_CASE("shared texts: one copy of each text, from any thread; empty by default") {
    using switchboard::util::SharedText;
    const std::string purpose = "council tax and benefit account changes"; // longer than a short string
    SharedText a = purpose, b = std::string_view(purpose), empty;
    CHECK(a == b);
    CHECK(&a.str() == &b.str()); // the same copy, not an equal one
    CHECK(a == purpose);
    CHECK(a.str() == purpose);
    CHECK(std::string(a.c_str()) == purpose);
    CHECK(empty.empty());
    CHECK(empty == "");
    CHECK(SharedText("") == empty);
    SharedText other = "housing";
    CHECK_FALSE(other == a);
    CHECK(other == "housing");
    // A thread's last text is not another's: each finds the one copy.
    std::vector<const std::string*> seen(8);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < seen.size(); ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) SharedText(i % 2 ? "housing" : "x" + std::to_string(i % 7));
            seen[t] = &SharedText(purpose).str();
        });
    for (auto& t : threads) t.join();
    for (const std::string* s : seen) CHECK(s == &a.str());
    CHECK(&SharedText("housing").str() == &other.str());
}
