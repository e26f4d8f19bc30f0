// The record semantics that core and harness share (detail/record_data.hpp),
// exercised through the host API functions a plugin calls.
#include <catch2/catch.hpp>

#include <switchboard/detail/record_data.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using sb::detail::parse_path;
using sb::detail::PathSegment;

// A record and the host table's record functions, as a plugin sees them.
struct Rec {
    sb_host_api api{};
    sb_record rec;
    Rec() { sb::detail::fill_record_api(api); }

    sb_status str(const char* path, std::string_view v, const char* cat = "test.cat") {
        sb_value x{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
        return api.record_set(&rec, path, &x, cat);
    }
    sb_status integer(const char* path, std::int64_t v, const char* cat = "test.cat") {
        sb_value x{SB_VALUE_INT, nullptr, 0, v, 0};
        return api.record_set(&rec, path, &x, cat);
    }
    sb_status number(const char* path, double v) {
        sb_value x{SB_VALUE_FLOAT, nullptr, 0, 0, v};
        return api.record_set(&rec, path, &x, nullptr);
    }
    sb_status boolean(const char* path, bool v) {
        sb_value x{SB_VALUE_BOOL, nullptr, 0, v ? 1 : 0, 0};
        return api.record_set(&rec, path, &x, nullptr);
    }
    sb_status null(const char* path) {
        sb_value x{};
        return api.record_set(&rec, path, &x, nullptr);
    }
    std::vector<std::string> paths() const {
        std::vector<std::string> out;
        for (std::size_t i = 0; i < api.record_field_count(&rec); ++i) {
            sb_field f{};
            f.struct_size = sizeof f;
            REQUIRE(api.record_field_at(&rec, i, &f) == SB_OK);
            out.emplace_back(f.path);
        }
        return out;
    }
    std::string json() const {
        std::size_t len = 0;
        const char* j = api.record_json(&rec, &len);
        return std::string(j, len);
    }
    std::string fields_json() const {
        std::string out;
        rec.data.write_fields_json(out);
        return out;
    }
};

bool parses(std::string_view path) {
    std::vector<PathSegment> segs;
    return parse_path(path, segs);
}

std::string repeat_path(std::size_t segments) {
    std::string p = "a";
    for (std::size_t i = 1; i < segments; ++i) p += ".a";
    return p;
}

} // namespace

TEST_CASE("paths: valid shapes parse into key and index segments") {
    std::vector<PathSegment> segs;
    REQUIRE(parse_path("content.turns[2].text", segs));
    REQUIRE(segs.size() == 4);
    CHECK(segs[0].key == "content");
    CHECK(segs[1].key == "turns");
    CHECK(segs[2].is_index());
    CHECK(segs[2].index == 2);
    CHECK(segs[3].key == "text");

    CHECK(parses("a"));
    CHECK(parses("A-b_9.x"));
    CHECK(parses("m[0][1]"));
    CHECK(parses("0.1")); // keys may be digits
    CHECK(parses("a[65535]"));
}

TEST_CASE("paths: malformed shapes are refused") {
    for (const char* bad : {"", ".a", "a.", "a..b", "[0]", "a[]", "a[x]", "a[1", "a]", "a b",
                            "a/b", "a.b c", "a[0]b", "a[-1]", "caf\xc3\xa9", "a.[0]"}) {
        INFO(bad);
        CHECK_FALSE(parses(bad));
    }
}

TEST_CASE("paths: length, depth and index limits") {
    CHECK(parses(std::string(sb::detail::kMaxPathLength, 'a')));
    CHECK_FALSE(parses(std::string(sb::detail::kMaxPathLength + 1, 'a')));
    CHECK(parses(repeat_path(sb::detail::kMaxPathDepth)));
    CHECK_FALSE(parses(repeat_path(sb::detail::kMaxPathDepth + 1)));
    CHECK_FALSE(parses("a[65536]"));
    CHECK_FALSE(parses("a[12345678]")); // more than 7 digits
    CHECK(parses("a[0000001]"));

    Rec r;
    CHECK(r.str(repeat_path(33).c_str(), "x") == SB_ERR_INVALID);
    CHECK(r.api.record_field_count(&r.rec) == 0);
}

TEST_CASE("paths: canonical form drops leading zeros in indexes") {
    Rec r;
    REQUIRE(r.str("a[002].b", "x") == SB_OK);
    CHECK(r.paths() == std::vector<std::string>{"a[2].b"});
    sb_field f{};
    CHECK(r.api.record_get(&r.rec, "a[2].b", &f) == SB_OK);
}

TEST_CASE("fields come out in path order: indexes numerically, keys bytewise") {
    Rec r;
    REQUIRE(r.str("turns[10].text", "ten") == SB_OK);
    REQUIRE(r.str("turns[2].text", "two") == SB_OK);
    REQUIRE(r.str("turns[2].at", "t") == SB_OK);
    REQUIRE(r.str("zeta", "z") == SB_OK);
    REQUIRE(r.str("b.ba", "x") == SB_OK);
    REQUIRE(r.str("b.b", "x") == SB_OK);
    REQUIRE(r.str("B", "x") == SB_OK);
    CHECK(r.paths() == std::vector<std::string>{"B", "b.b", "b.ba", "turns[2].at",
                                                "turns[2].text", "turns[10].text", "zeta"});
}

TEST_CASE("conflicts: a leaf cannot also be a subtree") {
    Rec r;
    REQUIRE(r.str("a.b", "x") == SB_OK);
    CHECK(r.str("a.b.c", "x") == SB_ERR_INVALID); // below an existing leaf
    CHECK(r.str("a", "x") == SB_ERR_INVALID);     // above an existing leaf
    CHECK(r.str("a.b[0]", "x") == SB_ERR_INVALID);
    CHECK(r.str("a.c", "x") == SB_OK);     // a sibling is fine
    CHECK(r.str("ab", "x") == SB_OK);      // a key prefix is not a path prefix
    CHECK(r.str("a.bc.d", "x") == SB_OK);
    CHECK(r.paths() == std::vector<std::string>{"a.b", "a.bc.d", "a.c", "ab"});
}

TEST_CASE("conflicts: a container is an array or an object, not both") {
    Rec r;
    REQUIRE(r.str("a[0]", "x") == SB_OK);
    CHECK(r.str("a.x", "x") == SB_ERR_INVALID);
    REQUIRE(r.str("o.k", "x") == SB_OK);
    CHECK(r.str("o[0]", "x") == SB_ERR_INVALID);
    REQUIRE(r.str("x.a[0].p", "x") == SB_OK);
    REQUIRE(r.str("x.a[3].q", "x") == SB_OK);
    CHECK(r.str("x.a.k", "x") == SB_ERR_INVALID);
    CHECK(r.str("x.a[1]", "x") == SB_OK); // elements may differ in shape
    CHECK(r.api.record_field_count(&r.rec) == 5);
}

TEST_CASE("the order of set() calls changes nothing: same paths, same JSON, same conflicts refused") {
    const std::vector<std::string> valid = {"citizen.name", "citizen.address.postcode", "turns[0].text",
                                            "turns[0].at", "turns[2].text", "turns[10].text", "ref[1]",
                                            "ref[0]", "zeta", "a.b.c", "a.bc", "B"};
    // Each conflicts with one of `valid`, whatever came first.
    const std::vector<std::string> conflicting = {"citizen", "citizen.name.first", "turns.x", "ref.k",
                                                  "a.b", "a.b.c.d", "turns[0]"};
    std::string expected_json;
    std::vector<std::string> expected_paths;
    std::uint32_t seed = 12345;
    auto next = [&] { return seed = seed * 1103515245u + 12345u; };
    for (int round = 0; round < 200; ++round) {
        std::vector<std::string> order = valid;
        for (const auto& c : conflicting) order.push_back(c);
        for (std::size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[next() % i]);
        Rec r;
        std::vector<std::string> refused;
        for (const auto& p : order) {
            // Reading in between puts the leaves in order; the record must
            // take further out-of-order sets after it.
            if (next() % 4 == 0) (void)r.paths();
            if (r.str(p.c_str(), p) != SB_OK) refused.push_back(p);
        }
        // Whichever of a conflicting pair came first is kept; set again the
        // valid ones that lost, after removing what blocked them.
        for (const auto& c : conflicting) r.rec.data.erase(c);
        for (const auto& p : valid) REQUIRE(r.str(p.c_str(), p) == SB_OK);
        for (const auto& c : conflicting) CHECK(r.str(c.c_str(), c) == SB_ERR_INVALID);
        if (round == 0) {
            expected_json = r.json();
            expected_paths = r.paths();
            CHECK(expected_paths.size() == valid.size());
        } else {
            REQUIRE(r.json() == expected_json);
            REQUIRE(r.paths() == expected_paths);
        }
    }
}

TEST_CASE("setting a path again replaces its value and category") {
    Rec r;
    REQUIRE(r.str("contact.phone", "one", "contact.phone") == SB_OK);
    REQUIRE(r.integer("contact.phone", 7, "reference.internal") == SB_OK);
    REQUIRE(r.api.record_field_count(&r.rec) == 1);
    sb_field f{};
    f.struct_size = sizeof f;
    REQUIRE(r.api.record_get(&r.rec, "contact.phone", &f) == SB_OK);
    CHECK(f.value.type == SB_VALUE_INT);
    CHECK(f.value.i == 7);
    CHECK(std::string(f.category) == "reference.internal");
}

TEST_CASE("values: types, categories and bad input") {
    Rec r;
    REQUIRE(r.str("s", std::string_view("a\0b", 3)) == SB_OK);
    REQUIRE(r.boolean("b", true) == SB_OK);
    REQUIRE(r.null("n") == SB_OK);
    REQUIRE(r.str("u", "x", nullptr) == SB_OK);
    REQUIRE(r.str("e", "x", "") == SB_OK);
    sb_field f{};
    f.struct_size = sizeof f;
    REQUIRE(r.api.record_get(&r.rec, "s", &f) == SB_OK);
    CHECK(std::string(f.value.str, f.value.len) == std::string("a\0b", 3));
    REQUIRE(r.api.record_get(&r.rec, "b", &f) == SB_OK);
    CHECK(f.value.type == SB_VALUE_BOOL);
    CHECK(f.value.i == 1);
    REQUIRE(r.api.record_get(&r.rec, "u", &f) == SB_OK);
    CHECK(std::string(f.category) == "unknown");
    REQUIRE(r.api.record_get(&r.rec, "e", &f) == SB_OK);
    CHECK(std::string(f.category) == "unknown");
    CHECK(r.api.record_get(&r.rec, "missing", &f) == SB_ERR_NOT_FOUND);
    CHECK(r.api.record_get(&r.rec, "bad..path", &f) == SB_ERR_NOT_FOUND);
    CHECK(r.api.record_field_at(&r.rec, 99, &f) == SB_ERR_NOT_FOUND);

    sb_value dangling{SB_VALUE_STRING, nullptr, 3, 0, 0};
    CHECK(r.api.record_set(&r.rec, "d", &dangling, nullptr) == SB_ERR_INVALID);
    // A C plugin may put any int in the type; here its bytes arrive as they would.
    sb_value bad_type{};
    const int bogus = 42;
    std::memcpy(&bad_type.type, &bogus, sizeof bogus);
    CHECK(r.api.record_set(&r.rec, "d", &bad_type, nullptr) == SB_ERR_INVALID);
    sb_value empty{SB_VALUE_STRING, nullptr, 0, 0, 0};
    CHECK(r.api.record_set(&r.rec, "empty", &empty, nullptr) == SB_OK);

    // Null arguments are answered, not dereferenced.
    CHECK(r.api.record_set(nullptr, "a", &empty, nullptr) == SB_ERR_INVALID);
    CHECK(r.api.record_set(&r.rec, nullptr, &empty, nullptr) == SB_ERR_INVALID);
    CHECK(r.api.record_set(&r.rec, "a", nullptr, nullptr) == SB_ERR_INVALID);
    CHECK(r.api.record_get(&r.rec, "s", nullptr) == SB_ERR_INVALID);
    CHECK(r.api.record_get_meta(nullptr, "channel") == nullptr);
    CHECK(r.api.record_field_count(nullptr) == 0);
    CHECK(r.api.record_json(nullptr, nullptr) == nullptr);
}

TEST_CASE("values: a field gives the number of its own type only, 0 in the other member") {
    // A leaf keeps one number (i for integers and booleans, f for floats, in
    // the same bytes, so that a leaf is a cache line); what a plugin reads
    // back has 0 in the member its type does not use, as before.
    Rec r;
    REQUIRE(r.number("f", -2.5) == SB_OK);
    REQUIRE(r.integer("i", -4'611'686'018'427'387'904) == SB_OK);
    REQUIRE(r.boolean("b", true) == SB_OK);
    REQUIRE(r.str("s", "text") == SB_OK);
    REQUIRE(r.null("n") == SB_OK);
    sb_field f{};
    f.struct_size = sizeof f;
    REQUIRE(r.api.record_get(&r.rec, "f", &f) == SB_OK);
    CHECK(f.value.f == -2.5);
    CHECK(f.value.i == 0);
    REQUIRE(r.api.record_get(&r.rec, "i", &f) == SB_OK);
    CHECK(f.value.i == -4'611'686'018'427'387'904);
    CHECK(f.value.f == 0);
    REQUIRE(r.api.record_get(&r.rec, "b", &f) == SB_OK);
    CHECK(f.value.i == 1);
    CHECK(f.value.f == 0);
    for (const char* p : {"s", "n"}) {
        REQUIRE(r.api.record_get(&r.rec, p, &f) == SB_OK);
        CHECK(f.value.i == 0);
        CHECK(f.value.f == 0);
    }
    // Set again with another type, in place: the old number does not show through.
    REQUIRE(r.integer("f", 7) == SB_OK);
    REQUIRE(r.api.record_get(&r.rec, "f", &f) == SB_OK);
    CHECK(f.value.i == 7);
    CHECK(f.value.f == 0);
    REQUIRE(r.number("i", 0.5) == SB_OK);
    REQUIRE(r.api.record_get(&r.rec, "i", &f) == SB_OK);
    CHECK(f.value.i == 0);
    CHECK(f.value.f == 0.5);
    CHECK(r.fields_json() == "{\"b\":true,\"f\":7,\"i\":0.5,\"n\":null,\"s\":\"text\"}");
}

TEST_CASE("prefetch changes nothing: an empty record, and one whose fields were set out of order") {
    Rec empty;
    empty.rec.data.prefetch();
    CHECK(empty.fields_json() == "{}");
    Rec r;
    REQUIRE(r.str("z.long", "a value longer than the small-string buffer of std::string") == SB_OK);
    REQUIRE(r.integer("a", 1) == SB_OK); // out of path order: kept unsorted until read
    REQUIRE(r.str("m", "short") == SB_OK);
    r.rec.data.prefetch();
    CHECK(r.paths() == std::vector<std::string>{"a", "m", "z.long"});
    CHECK(r.fields_json() ==
          "{\"a\":1,\"m\":\"short\",\"z\":{\"long\":\"a value longer than the small-string buffer of std::string\"}}");
}

TEST_CASE("erase removes a leaf or a whole subtree, and nothing else") {
    Rec r;
    for (const char* p : {"citizen.name", "citizen.address.postcode", "citizen.address.line1",
                          "citizens", "turns[1].text", "turns[1].at", "turns[10].text", "x"})
        REQUIRE(r.str(p, "v") == SB_OK);
    CHECK(r.rec.data.erase("citizen.address") == 2);
    CHECK(r.rec.data.erase("turns[1]") == 2);
    CHECK(r.rec.data.erase("x") == 1);
    CHECK(r.rec.data.erase("nothing.here") == 0);
    CHECK(r.rec.data.erase("bad..path") == 0);
    CHECK(r.paths() == std::vector<std::string>{"citizen.name", "citizens", "turns[10].text"});
    CHECK(r.rec.data.erase("citizen") == 1);
    CHECK(r.paths() == std::vector<std::string>{"citizens", "turns[10].text"});
}

TEST_CASE("JSON: nested objects and arrays, with null for gaps") {
    Rec r;
    REQUIRE(r.str("citizen.name", "Ann") == SB_OK);
    REQUIRE(r.str("citizen.address.postcode", "LS1 1AA") == SB_OK);
    REQUIRE(r.str("turns[2].text", "hi") == SB_OK);
    REQUIRE(r.str("turns[0].text", "hello") == SB_OK);
    REQUIRE(r.str("turns[0].by", "agent") == SB_OK);
    REQUIRE(r.integer("m[1][2]", 5) == SB_OK);
    REQUIRE(r.integer("m[0][0]", 1) == SB_OK);
    REQUIRE(r.integer("z", -3) == SB_OK);
    CHECK(r.fields_json() ==
          R"({"citizen":{"address":{"postcode":"LS1 1AA"},"name":"Ann"},)"
          R"("m":[[1],[null,null,5]],)"
          R"("turns":[{"by":"agent","text":"hello"},null,{"text":"hi"}],"z":-3})");
}

TEST_CASE("JSON: paths as deep as allowed, ending in arrays and objects") {
    // kMaxPathDepth segments, the deepest a path may be: the writer's
    // stack of open containers holds one per segment but the last.
    const std::size_t depth = sb::detail::kMaxPathDepth;
    Rec r;
    const std::string deep = repeat_path(depth);                      // a.a. … .a
    const std::string deep_array = repeat_path(depth - 2) + ".b[3]"; // beside its last two
    REQUIRE(r.str(deep.c_str(), "x") == SB_OK);
    REQUIRE(r.str(deep_array.c_str(), "y") == SB_OK);
    std::string expected = "{";
    for (std::size_t i = 0; i < depth - 2; ++i) expected += "\"a\":{";
    expected += R"("a":{"a":"x"},"b":[null,null,null,"y"])";
    for (std::size_t i = 0; i < depth - 2; ++i) expected += "}";
    expected += "}";
    CHECK(r.fields_json() == expected);
}

TEST_CASE("JSON: an empty record and a removed array element") {
    Rec r;
    CHECK(r.fields_json() == "{}");
    CHECK(r.json() == R"({"id":null,"meta":{},"fields":{},"attachments":[]})");
    REQUIRE(r.str("t[0]", "a") == SB_OK);
    REQUIRE(r.str("t[1]", "b") == SB_OK);
    REQUIRE(r.rec.data.erase("t[0]") == 1);
    CHECK(r.fields_json() == R"({"t":[null,"b"]})");
}

TEST_CASE("JSON: strings are escaped and invalid UTF-8 becomes U+FFFD") {
    Rec r;
    REQUIRE(r.str("q", "say \"hi\"\\ \n\t\r\b\f") == SB_OK);
    REQUIRE(r.str("c", std::string_view("\x01\x1f\0", 3)) == SB_OK);
    REQUIRE(r.str("ok", "\xc2\xa3 \xe2\x82\xac \xf0\x9f\x98\x80") == SB_OK); // £ € 😀
    REQUIRE(r.str("bad1", "a\xff" "b") == SB_OK);
    REQUIRE(r.str("bad2", "\xe2\x82") == SB_OK);          // truncated
    REQUIRE(r.str("bad3", "\xc0\xaf") == SB_OK);          // overlong
    REQUIRE(r.str("bad4", "\xed\xa0\x80") == SB_OK);      // surrogate
    REQUIRE(r.str("bad5", "\xf4\x90\x80\x80") == SB_OK);  // above U+10FFFF
    const std::string fffd = "\xef\xbf\xbd";
    CHECK(r.fields_json() ==
          "{\"bad1\":\"a" + fffd + "b\",\"bad2\":\"" + fffd + fffd + "\",\"bad3\":\"" + fffd +
              fffd + "\",\"bad4\":\"" + fffd + fffd + fffd + "\",\"bad5\":\"" + fffd + fffd +
              fffd + fffd + "\",\"c\":\"\\u0001\\u001f\\u0000\",\"ok\":\"\xc2\xa3 \xe2\x82\xac "
              "\xf0\x9f\x98\x80\",\"q\":\"say \\\"hi\\\"\\\\ \\n\\t\\r\\b\\f\"}");
}

TEST_CASE("JSON: numbers, booleans and null; floats keep a '.'") {
    Rec r;
    REQUIRE(r.number("f1", 1.0) == SB_OK);
    REQUIRE(r.number("f2", -2.5) == SB_OK);
    REQUIRE(r.number("f3", 1e20) == SB_OK);
    REQUIRE(r.number("f4", std::nan("")) == SB_OK);
    REQUIRE(r.integer("i", INT64_MIN) == SB_OK);
    REQUIRE(r.boolean("t", true) == SB_OK);
    REQUIRE(r.boolean("u", false) == SB_OK);
    REQUIRE(r.null("z") == SB_OK);
    CHECK(r.fields_json() == R"({"f1":1.0,"f2":-2.5,"f3":1e+20,"f4":null,)"
                             R"("i":-9223372036854775808,"t":true,"u":false,"z":null})");
}

TEST_CASE("JSON is recomputed after a change") {
    Rec r;
    REQUIRE(r.str("a", "1") == SB_OK);
    std::string before = r.json();
    REQUIRE(r.str("a", "2") == SB_OK);
    CHECK(r.json() != before);
    CHECK(r.json().find(R"("fields":{"a":"2"})") != std::string::npos);
}

TEST_CASE("meta: sources set channel, times and ids; host keys are refused") {
    Rec r;
    CHECK(r.api.record_set_meta(&r.rec, SB_META_CHANNEL, "phone") == SB_OK);
    CHECK(r.api.record_set_meta(&r.rec, SB_META_EXTERNAL_ID, "call-1") == SB_OK);
    CHECK(r.api.record_set_meta(&r.rec, SB_META_SUBJECT_REF, "cust-9") == SB_OK);
    for (const char* key : {"id", "source", "received_at", "expires_at", "category", "colour", ""}) {
        INFO(key);
        CHECK(r.api.record_set_meta(&r.rec, key, "x") == SB_ERR_INVALID);
    }
    CHECK(r.api.record_set_meta(&r.rec, nullptr, "x") == SB_ERR_INVALID);
    CHECK(r.api.record_set_meta(&r.rec, SB_META_CHANNEL, nullptr) == SB_ERR_INVALID);
    CHECK(std::string(r.api.record_get_meta(&r.rec, "channel")) == "phone");
    CHECK(r.api.record_get_meta(&r.rec, "occurred_at") == nullptr);
    CHECK(r.api.record_get_meta(&r.rec, "nonsense") == nullptr);

    // The host stamps its own keys through RecordData directly.
    REQUIRE(r.rec.data.set_meta("id", "rec-1") == SB_OK);
    REQUIRE(r.rec.data.set_meta("received_at", "2025-01-06T09:00:00Z") == SB_OK);
    CHECK(r.rec.data.set_meta("received_at", "monday") == SB_ERR_INVALID);
    CHECK(r.rec.data.set_meta("colour", "x") == SB_ERR_INVALID);
    CHECK(r.json() ==
          R"({"id":"rec-1","meta":{"channel":"phone","received_at":"2025-01-06T09:00:00Z",)"
          R"("external_id":"call-1","subject_ref":"cust-9"},"fields":{},"attachments":[]})");
}

TEST_CASE("meta: times must be RFC 3339") {
    Rec r;
    for (const char* good : {"2025-01-06T09:00:00Z", "2025-01-06t09:00:00z",
                             "2024-02-29T23:59:60Z", "2000-02-29T00:00:00Z",
                             "2025-01-06T09:00:00.123Z", "2025-01-06T09:00:00+01:00",
                             "2025-01-06T09:00:00.5-05:30"}) {
        INFO(good);
        CHECK(r.api.record_set_meta(&r.rec, SB_META_OCCURRED_AT, good) == SB_OK);
    }
    for (const char* bad : {"", "2025-01-06", "2025-01-06 09:00:00Z", "2025-01-06T09:00:00",
                            "2025-01-06T09:00:00+0100", "2025-01-06T09:00:00.Z",
                            "2025-1-6T09:00:00Z", "2025-01-06T09:00Z", "yesterday",
                            "2025-01-06T09:00:00Zjunk", "2025-01-06T09:00:00+01:00:00",
                            // Well-shaped but out of range.
                            "2025-13-01T09:00:00Z", "2025-00-10T09:00:00Z", "2025-02-29T09:00:00Z",
                            "2025-04-31T09:00:00Z", "2025-01-06T24:00:00Z", "2025-01-06T09:60:00Z",
                            "2025-01-06T09:00:61Z", "2025-01-06T09:00:00+24:00"}) {
        INFO(bad);
        CHECK(r.api.record_set_meta(&r.rec, SB_META_OCCURRED_AT, bad) == SB_ERR_INVALID);
    }
    // A refused value leaves the previous one in place.
    CHECK(std::string(r.api.record_get_meta(&r.rec, "occurred_at")) ==
          "2025-01-06T09:00:00.5-05:30");
}

TEST_CASE("attachments: held by reference, with defaults") {
    Rec r;
    sb_attachment a{};
    a.struct_size = sizeof a;
    a.name = "recording";
    a.uri = "file:///var/lib/switchboard/a.wav";
    a.media_type = "audio/wav";
    a.size = 1234;
    a.sha256 = "ab12";
    a.category = "media.voice";
    REQUIRE(r.api.record_add_attachment(&r.rec, &a) == SB_OK);
    sb_attachment b{};
    b.struct_size = sizeof b;
    b.uri = "vendor://scan/9";
    b.size = -1;
    REQUIRE(r.api.record_add_attachment(&r.rec, &b) == SB_OK);
    sb_attachment none{};
    none.struct_size = sizeof none;
    CHECK(r.api.record_add_attachment(&r.rec, &none) == SB_ERR_INVALID);
    none.uri = "";
    CHECK(r.api.record_add_attachment(&r.rec, &none) == SB_ERR_INVALID);
    CHECK(r.api.record_add_attachment(&r.rec, nullptr) == SB_ERR_INVALID);

    REQUIRE(r.api.record_attachment_count(&r.rec) == 2);
    sb_attachment out{};
    out.struct_size = sizeof out;
    REQUIRE(r.api.record_attachment_at(&r.rec, 1, &out) == SB_OK);
    CHECK(std::string(out.uri) == "vendor://scan/9");
    CHECK(std::string(out.name).empty());
    CHECK(std::string(out.media_type) == "application/octet-stream");
    CHECK(std::string(out.category) == "unknown");
    CHECK(out.sha256 == nullptr);
    CHECK(out.size == -1);
    CHECK(r.api.record_attachment_at(&r.rec, 2, &out) == SB_ERR_NOT_FOUND);
    CHECK(r.json() ==
          R"({"id":null,"meta":{},"fields":{},"attachments":[)"
          R"({"name":"recording","uri":"file:///var/lib/switchboard/a.wav","media_type":"audio/wav",)"
          R"("size":1234,"sha256":"ab12","category":"media.voice"},)"
          R"({"name":"","uri":"vendor://scan/9","media_type":"application/octet-stream",)"
          R"("size":-1,"category":"unknown"}]})");
}

TEST_CASE("shapes (ABI 1.2): a record set by its shape is the record set field by field") {
    // Paths in document order, not path order, one spelled differently, and
    // categories given, defaulted and empty.
    const char* paths[] = {"z", "a.b", "a.c", "list[01]", "list[0]", "n", "f", "t"};
    const char* cats[] = {"cat.z", "cat.ab", nullptr, "", "cat.l0", "cat.n", "cat.f", "cat.t"};
    const std::size_t n = std::size(paths);
    const sb_value values[] = {
        {SB_VALUE_STRING, "last", 4, 0, 0}, {SB_VALUE_STRING, "with\0nul", 8, 0, 0},
        {SB_VALUE_NULL, nullptr, 0, 0, 0},  {SB_VALUE_STRING, "", 0, 0, 0},
        {SB_VALUE_INT, nullptr, 0, -7, 0},  {SB_VALUE_INT, nullptr, 0, 42, 0},
        {SB_VALUE_FLOAT, nullptr, 0, 0, 2.5}, {SB_VALUE_BOOL, nullptr, 0, 5, 0}};

    Rec one_by_one;
    for (std::size_t k = 0; k < n; ++k)
        REQUIRE(one_by_one.api.record_set(&one_by_one.rec, paths[k], &values[k], cats[k]) == SB_OK);

    Rec shaped;
    sb_shape* shape = shaped.api.shape_new(paths, cats, n);
    REQUIRE(shape);
    REQUIRE(shaped.api.record_set_shape(&shaped.rec, shape, values) == SB_OK);
    shaped.api.shape_free(shape); // the record does not depend on it

    CHECK(shaped.paths() == one_by_one.paths());
    CHECK(shaped.json() == one_by_one.json());
    for (std::size_t i = 0; i < n; ++i) {
        sb_field a{}, b{};
        a.struct_size = b.struct_size = sizeof a;
        REQUIRE(shaped.api.record_field_at(&shaped.rec, i, &a) == SB_OK);
        REQUIRE(one_by_one.api.record_field_at(&one_by_one.rec, i, &b) == SB_OK);
        CHECK(std::string(a.category) == b.category);
        CHECK(a.value.type == b.value.type);
        CHECK(a.value.i == b.value.i);
    }
    CHECK(shaped.json().find(R"("t":true)") != std::string::npos);

    // The same shape, used again, for another record.
    Rec again;
    shape = again.api.shape_new(paths, nullptr, n);
    REQUIRE(shape);
    REQUIRE(again.api.record_set_shape(&again.rec, shape, values) == SB_OK);
    CHECK(again.json() == one_by_one.json());
    sb_field f{};
    f.struct_size = sizeof f;
    REQUIRE(again.api.record_get(&again.rec, "z", &f) == SB_OK);
    CHECK(std::string(f.category) == "unknown");
    again.api.shape_free(shape);
}

TEST_CASE("a recycled record is a new record, and the next record of its shape reuses its buffers") {
    const char* paths[] = {"note", "name", "n"};
    const std::size_t n = std::size(paths);
    const std::string long_note(200, 'x'), long_name = "A name longer than the inline buffer";
    const sb_value first[] = {{SB_VALUE_STRING, long_note.c_str(), long_note.size(), 0, 0},
                              {SB_VALUE_STRING, long_name.c_str(), long_name.size(), 0, 0},
                              {SB_VALUE_INT, nullptr, 0, 7, 0}};
    Rec used;
    sb_shape* shape = used.api.shape_new(paths, nullptr, n);
    REQUIRE(shape);
    REQUIRE(used.api.record_set_shape(&used.rec, shape, first) == SB_OK);
    REQUIRE(used.api.record_set_meta(&used.rec, "channel", "web_chat") == SB_OK);
    sb_attachment a{sizeof(sb_attachment), "scan", "vendor://scan/1", nullptr, -1, nullptr, nullptr};
    REQUIRE(used.api.record_add_attachment(&used.rec, &a) == SB_OK);
    used.json();
    const char* note_buffer = used.rec.data.find("note")->str.data();

    used.rec.data.recycle();
    Rec fresh;
    CHECK(used.json() == fresh.json()); // no meta, fields or attachments left
    CHECK(used.rec.data.meta("channel") == nullptr);
    CHECK(used.rec.data.shape_id() == 0);

    // The next record of the shape: its values, in the old buffers.
    const std::string note2(150, 'y');
    const sb_value second[] = {{SB_VALUE_STRING, note2.c_str(), note2.size(), 0, 0},
                               {SB_VALUE_STRING, "Short", 5, 0, 0},
                               {SB_VALUE_STRING, "now a string", 12, 0, 0}};
    REQUIRE(used.api.record_set_shape(&used.rec, shape, second) == SB_OK);
    REQUIRE(fresh.api.record_set_shape(&fresh.rec, shape, second) == SB_OK);
    CHECK(used.json() == fresh.json());
    CHECK(used.rec.data.find("note")->str.data() == note_buffer);
    CHECK(used.rec.data.find("n")->str == "now a string");

    // A buffer much larger than the next value needs is not kept.
    used.rec.data.recycle();
    const std::string huge(100000, 'h');
    const sb_value big[] = {{SB_VALUE_STRING, huge.c_str(), huge.size(), 0, 0},
                            {SB_VALUE_STRING, "Short", 5, 0, 0},
                            {SB_VALUE_INT, nullptr, 0, 1, 0}};
    REQUIRE(used.api.record_set_shape(&used.rec, shape, big) == SB_OK);
    CHECK(used.rec.data.find("note")->str.capacity() >= huge.size());
    used.rec.data.recycle();
    REQUIRE(used.api.record_set_shape(&used.rec, shape, second) == SB_OK);
    CHECK(used.rec.data.find("note")->str.capacity() < 1000);
    CHECK(used.json() == fresh.json());

    // Recycled again, then set field by field (not by shape): the same.
    used.rec.data.recycle();
    Rec plain;
    for (Rec* r : {&used, &plain}) {
        REQUIRE(r->str("b.c", "value") == SB_OK);
        REQUIRE(r->integer("a", 3) == SB_OK);
    }
    CHECK(used.json() == plain.json());
    CHECK(used.paths() == plain.paths());
    used.api.shape_free(shape);
}

TEST_CASE("cards: a record the host noted as looked at stays so until a leaf changes; the envelope does not "
          "count; recycling forgets the count") {
    // The host redacts card data as a source sets a record (record_set_shape)
    // and looks again at ingest only if a leaf changed since (cards_clean).
    Rec r;
    REQUIRE(r.str("a", "x") == SB_OK);
    sb::detail::RecordData& d = r.rec.data;
    CHECK_FALSE(d.cards_clean());
    CHECK(d.cards_redacted() == 0);
    d.note_cards_redacted(2);
    CHECK(d.cards_clean());
    CHECK(d.cards_redacted() == 2);

    // The envelope and attachments are not looked at: no change.
    REQUIRE(r.api.record_set_meta(&r.rec, "channel", "web_chat") == SB_OK);
    sb_attachment a{sizeof(sb_attachment), "scan", "vendor://scan/1", nullptr, -1, nullptr, nullptr};
    REQUIRE(r.api.record_add_attachment(&r.rec, &a) == SB_OK);
    CHECK(d.cards_clean());

    // Each way of changing a leaf makes it look again; the count is kept.
    auto changes = [&](const char* what, auto&& change) {
        INFO(what);
        d.note_cards_redacted(0);
        REQUIRE(d.cards_clean());
        change();
        CHECK_FALSE(d.cards_clean());
        CHECK(d.cards_redacted() == 2);
    };
    changes("set", [&] { REQUIRE(r.str("b", "y") == SB_OK); });
    changes("set again", [&] { REQUIRE(r.str("a", "z") == SB_OK); });
    changes("mutable_leaves", [&] { (void)d.mutable_leaves(); });
    changes("erase", [&] { CHECK(d.erase("b") == 1); });
    Rec other;
    REQUIRE(other.str("c", "w") == SB_OK);
    changes("append_copy", [&] { d.append_copy(other.rec.data.leaves()[0]); });

    // A copy is the same record: what was looked at, and the count.
    d.note_cards_redacted(1);
    sb::detail::RecordData copy = d;
    CHECK(copy.cards_clean());
    CHECK(copy.cards_redacted() == 3);

    // Recycled: a new record, and the next one set by its shape is new too.
    d.recycle();
    CHECK_FALSE(d.cards_clean());
    CHECK(d.cards_redacted() == 0);
    d.note_cards_redacted(0);
    const char* paths[] = {"a"};
    sb_shape* shape = r.api.shape_new(paths, nullptr, 1);
    REQUIRE(shape);
    const sb_value v[] = {{SB_VALUE_STRING, "q", 1, 0, 0}};
    REQUIRE(r.api.record_set_shape(&r.rec, shape, v) == SB_OK);
    CHECK_FALSE(d.cards_clean());
    r.api.shape_free(shape);
}

TEST_CASE("a recycled record made again leaf by leaf (a profile's copy) reuses its leaves' buffers in turn") {
    // The source: a record of three leaves, two with long values.
    Rec src;
    const std::string name = "A name longer than the inline buffer", note(200, 'n');
    REQUIRE(src.str("a.name", name) == SB_OK);
    REQUIRE(src.str("b.note", note) == SB_OK);
    REQUIRE(src.integer("c", 5) == SB_OK);
    const auto& leaves = src.rec.data.leaves();
    REQUIRE(leaves.size() == 3);

    // A copy of the first two; recycled, then made again of the first and
    // (in the second leaf's place) the third, with a value of its own.
    Rec copy;
    copy.rec.data.append_copy(leaves[0]);
    copy.rec.data.append_copy(leaves[1]);
    const char* name_buffer = copy.rec.data.leaves()[0].str.data();
    const char* note_buffer = copy.rec.data.leaves()[1].str.data();
    copy.rec.data.recycle();
    CHECK(copy.rec.data.leaves().empty());
    copy.rec.data.append_copy(leaves[0]); // the first leaf set aside
    auto& set = copy.rec.data.append_path_of(leaves[2]); // the second: as null
    CHECK(copy.rec.data.leaves()[0].str.data() == name_buffer);
    CHECK(set.type == SB_VALUE_NULL);
    CHECK(set.str.empty());
    CHECK(set.str.data() == note_buffer);
    set.type = SB_VALUE_STRING;
    set.str = "x";

    Rec fresh;
    fresh.rec.data.append_copy(leaves[0]);
    auto& fset = fresh.rec.data.append_path_of(leaves[2]);
    fset.type = SB_VALUE_STRING;
    fset.str = "x";
    CHECK(copy.json() == fresh.json());
    CHECK(copy.paths() == fresh.paths());

    // A buffer far larger than the value copied into it is given back.
    copy.rec.data.recycle();
    Rec small;
    REQUIRE(small.str("a", "short") == SB_OK);
    REQUIRE(small.str("b", "tiny") == SB_OK);
    copy.rec.data.append_copy(small.rec.data.leaves()[0]);
    copy.rec.data.append_copy(small.rec.data.leaves()[1]); // in the 200-byte leaf
    CHECK(copy.rec.data.leaves()[1].str.capacity() < 128);
    Rec plain;
    plain.rec.data.append_copy(small.rec.data.leaves()[0]);
    plain.rec.data.append_copy(small.rec.data.leaves()[1]);
    CHECK(copy.json() == plain.json());
}

TEST_CASE("shapes (ABI 1.2): what set() refuses, a shape refuses too, and nothing is set") {
    sb_host_api api{};
    sb::detail::fill_record_api(api);
    auto refused = [&](std::vector<const char*> paths) {
        sb_shape* s = api.shape_new(paths.data(), nullptr, paths.size());
        if (s) api.shape_free(s);
        return s == nullptr;
    };
    CHECK(refused({"a", "b", "a"}));           // the same leaf twice
    CHECK(refused({"a", "a.b"}));              // a leaf and a subtree
    CHECK(refused({"x.y[0]", "x.y.z"}));       // an array and an object
    CHECK(refused({"b", "a[1]", "a[001]"}));  // the same leaf, spelled two ways
    CHECK(refused({"ok", "bad..path"}));       // malformed
    CHECK(refused({"ok", nullptr}));
    CHECK(api.shape_new(nullptr, nullptr, 2) == nullptr);
    CHECK_FALSE(refused({}));                  // no fields: a valid (empty) shape
    CHECK_FALSE(refused({"a.b", "a.c", "ab"}));

    const char* paths[] = {"b", "a"};
    sb_shape* shape = api.shape_new(paths, nullptr, 2);
    REQUIRE(shape);
    Rec r;
    // A value set() refuses: nothing is set.
    sb_value bad[] = {{SB_VALUE_STRING, "b", 1, 0, 0}, {static_cast<sb_value_type>(99), nullptr, 0, 0, 0}};
    CHECK(api.record_set_shape(&r.rec, shape, bad) == SB_ERR_INVALID);
    sb_value no_text[] = {{SB_VALUE_STRING, nullptr, 3, 0, 0}, {SB_VALUE_INT, nullptr, 0, 1, 0}};
    CHECK(api.record_set_shape(&r.rec, shape, no_text) == SB_ERR_INVALID);
    CHECK(r.paths().empty());
    CHECK(api.record_set_shape(&r.rec, shape, nullptr) == SB_ERR_INVALID);
    CHECK(api.record_set_shape(nullptr, shape, bad) == SB_ERR_INVALID);
    CHECK(api.record_set_shape(&r.rec, nullptr, bad) == SB_ERR_INVALID);
    // A record that has fields already.
    REQUIRE(r.integer("c", 1) == SB_OK);
    sb_value good[] = {{SB_VALUE_STRING, "b", 1, 0, 0}, {SB_VALUE_INT, nullptr, 0, 1, 0}};
    CHECK(api.record_set_shape(&r.rec, shape, good) == SB_ERR_INVALID);
    CHECK(r.paths() == std::vector<std::string>{"c"});
    api.shape_free(shape);
    api.shape_free(nullptr);
}

TEST_CASE("fill_record_api sets every record function") {
    sb_host_api api{};
    sb::detail::fill_record_api(api);
    CHECK(api.shape_new);
    CHECK(api.shape_free);
    CHECK(api.record_set_shape);
    CHECK(api.record_set_meta);
    CHECK(api.record_set);
    CHECK(api.record_add_attachment);
    CHECK(api.record_get_meta);
    CHECK(api.record_field_count);
    CHECK(api.record_field_at);
    CHECK(api.record_get);
    CHECK(api.record_attachment_count);
    CHECK(api.record_attachment_at);
    CHECK(api.record_json);
}

TEST_CASE("format_time writes RFC 3339 UTC that the record accepts") {
    CHECK(sb::detail::format_time(0) == "1970-01-01T00:00:00.000Z");
    CHECK(sb::detail::format_time(1'736'154'000'000) == "2025-01-06T09:00:00.000Z");
    CHECK(sb::detail::format_time(1'709'251'199'999) == "2024-02-29T23:59:59.999Z");
    CHECK(sb::detail::format_time(4'102'444'800'000) == "2100-01-01T00:00:00.000Z");
    for (std::int64_t ms = 0; ms < 5'000'000'000'000; ms += 86'399'999'937) {
        CHECK(sb::detail::is_rfc3339(sb::detail::format_time(ms)));
        CHECK(sb::detail::parse_time(sb::detail::format_time(ms)) == ms);
    }
    // Every year of four digits (written digit by digit), and past them.
    CHECK(sb::detail::format_time(-1) == "1969-12-31T23:59:59.999Z");
    CHECK(sb::detail::format_time(-62'167'219'200'000) == "0000-01-01T00:00:00.000Z");
    CHECK(sb::detail::format_time(253'402'300'799'999) == "9999-12-31T23:59:59.999Z");
    CHECK(sb::detail::format_time(253'402'300'800'000) == "10000-01-01T00:00:00.000Z");
    CHECK(sb::detail::format_time(-62'167'219'200'001) == "-001-12-31T23:59:59.999Z");
    std::uint64_t x = 88172645463325252u; // xorshift: times all over the four-digit years
    for (int k = 0; k < 20000; ++k) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        const auto ms = static_cast<std::int64_t>(x % 315'569'520'000'000u) - 62'167'219'200'000;
        const std::string text = sb::detail::format_time(ms);
        REQUIRE(text.size() == 24);
        REQUIRE(sb::detail::parse_time(text) == ms);
    }
    CHECK(sb::detail::parse_time("2025-01-06T10:00:00+01:00") == 1'736'154'000'000);
    CHECK(sb::detail::parse_time("2025-01-06T09:00:00.123456Z") == 1'736'154'000'123);
    CHECK_FALSE(sb::detail::parse_time("2025-01-06 09:00:00Z"));
}

TEST_CASE("JSON strings: over several blocks, the plain prefix ends at the first byte that needs escaping") {
    // 45 bytes: two blocks of sixteen, a word of eight, five bytes.
    for (const char c : {'"', '\\', '\n', '\x1f', '\x80', '\xc3'}) {
        for (std::size_t at = 0; at < 45; ++at) {
            std::string s(45, 'x');
            s[at] = c;
            INFO("byte " << static_cast<int>(static_cast<unsigned char>(c)) << " at " << at);
            const std::size_t n = sb::detail::plain_json_bytes(s.data(), s.size());
#if defined(__SSE2__)
            CHECK(n == (at < 32 ? at : at < 40 ? 32 : 40));
#else
            CHECK(n == (at < 40 ? at / 8 * 8 : 40));
#endif
        }
    }
}

TEST_CASE("JSON strings: the word-at-a-time scan stops at every byte that needs escaping, wherever it is") {
    // One byte of every value at every place of a 20-byte run of 'a's: the
    // plain prefix ends exactly at it within the first sixteen bytes (SSE2),
    // else (the last four, or no SSE2) at the whole words before it; the
    // JSON is what escaping byte by byte gives.
    for (int b = 0; b < 256; ++b) {
        const auto c = static_cast<char>(b);
        const bool plain = b >= 0x20 && b < 0x80 && c != '"' && c != '\\';
        for (std::size_t at = 0; at < 20; ++at) {
            std::string s(20, 'a');
            s[at] = c;
            INFO("byte " << b << " at " << at);
            std::size_t n = sb::detail::plain_json_bytes(s.data(), s.size());
            CHECK(n <= s.size());
#if defined(__SSE2__)
            const std::size_t stop = at < 16 ? at : 16;
#else
            const std::size_t stop = at / 8 * 8;
#endif
            if (plain)
                CHECK(n == 16);
            else
                CHECK(n == stop);
            std::string out;
            sb::detail::append_json_string(out, s);
            std::string want = "\"" + s.substr(0, at);
            switch (c) {
            case '"': want += "\\\""; break;
            case '\\': want += "\\\\"; break;
            case '\n': want += "\\n"; break;
            case '\r': want += "\\r"; break;
            case '\t': want += "\\t"; break;
            case '\b': want += "\\b"; break;
            case '\f': want += "\\f"; break;
            default:
                if (b < 0x20) {
                    char u[8];
                    std::snprintf(u, sizeof u, "\\u%04x", b);
                    want += u;
                } else if (b < 0x80) {
                    want += c;
                } else {
                    want += "\xEF\xBF\xBD"; // a lone byte over 0x7f is not UTF-8: U+FFFD
                }
            }
            want += s.substr(at + 1) + "\"";
            CHECK(out == want);
        }
    }
}

TEST_CASE("rendered records (SB_CAP_JSON_RECORDS): the JSON of the tree, byte for byte, with each id set "
          "in place; the envelope answers, the fields do not, and asking is noted") {
    Rec r;
    REQUIRE(r.str("citizen.name", "Ada \"Quoted\" Lovelace") == SB_OK);
    REQUIRE(r.integer("visits", 3) == SB_OK);
    REQUIRE(r.str("turns[1].text", "hello\nthere") == SB_OK);
    REQUIRE(r.rec.data.set_meta("channel", "web_chat") == SB_OK);
    REQUIRE(r.rec.data.set_meta("expires_at", "2026-12-27T22:30:45.000Z") == SB_OK);

    sb_record rendered;
    sb::detail::render_record(r.rec, rendered);
    auto json_of = [&](const sb_record* rec) {
        std::size_t len = 0;
        const char* j = r.api.record_json(rec, &len);
        REQUIRE(j != nullptr);
        CHECK(std::strlen(j) == len); // NUL terminated where it ends
        return std::string(j, len);
    };
    // No id yet: as the tree gives it.
    CHECK(json_of(&rendered) == r.rec.data.json());

    // Ids short, at the room's limit, longer (the JSON moves), needing
    // escapes, and set again over an earlier one: always the tree's JSON.
    // {"id":"…" in place of {"id":null fills the room exactly:
    const std::string longest(sb::detail::kRenderedIdRoom + 2, '9');
    for (const std::string& id : {std::string("R1-2"), std::string("R9223372036854775807-4294967295"), longest,
                                 longest + "0", std::string(100, 'x'), std::string("a\"b\\c"),
                                 std::string("R2-7")}) {
        sb::detail::set_rendered_id(rendered, id);
        REQUIRE(r.rec.data.set_meta("id", id) == SB_OK);
        CHECK(json_of(&rendered) == r.rec.data.json());
        CHECK(std::string(r.api.record_get_meta(&rendered, "id")) == id);
    }

    // The envelope answers; fields and attachments do not, and the fields'
    // accessors note that they were asked.
    CHECK(std::string(r.api.record_get_meta(&rendered, "channel")) == "web_chat");
    CHECK(std::string(r.api.record_get_meta(&rendered, "expires_at")) == "2026-12-27T22:30:45.000Z");
    CHECK(r.api.record_get_meta(&rendered, "source") == nullptr); // not set
    CHECK(r.api.record_get_meta(&rendered, "nonsense") == nullptr);
    CHECK(r.api.record_attachment_count(&rendered) == 0);
    CHECK_FALSE(rendered.fields_read);
    CHECK(r.api.record_field_count(&rendered) == 0);
    CHECK(rendered.fields_read);
    rendered.fields_read = false;
    sb_field f{};
    f.struct_size = sizeof f;
    CHECK(r.api.record_field_at(&rendered, 0, &f) == SB_ERR_UNSUPPORTED);
    CHECK(rendered.fields_read);
    rendered.fields_read = false;
    CHECK(r.api.record_get(&rendered, "visits", &f) == SB_ERR_UNSUPPORTED);
    CHECK(rendered.fields_read);
    // The tree itself still answers as before.
    CHECK(r.api.record_field_count(&r.rec) == 3);
    CHECK_FALSE(r.rec.fields_read);
}

namespace memo_test {
struct Slot {
    std::uint64_t key = 0;
    int made = 0;
};
} // namespace memo_test

TEST_CASE("thread_memo_slot: keys that share a set keep their slots, four to a set, the oldest replaced") {
    using memo_test::Slot;
    // With 2 sets, keys 1..9 put at least five into one of them.
    auto slot = [](std::uint64_t key) -> Slot& { return sb::detail::thread_memo_slot<Slot, 1>(key); };
    auto set_of = [](std::uint64_t key) { return (key * 0x9E3779B97F4A7C15u) >> 63; };
    std::vector<std::uint64_t> same;
    for (std::uint64_t k = 1; same.size() < 5; ++k)
        if (set_of(k) == set_of(1)) same.push_back(k);
    // Four keys of one set, in turn, as records of four kinds would ask:
    // each is filled once and then found as it was left.
    for (int round = 0; round < 3; ++round)
        for (std::size_t i = 0; i < 4; ++i) {
            Slot& s = slot(same[i]);
            if (s.key != same[i]) s = {same[i], 0};
            ++s.made;
        }
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(slot(same[i]).key == same[i]);
        CHECK(slot(same[i]).made == 3); // filled once, found twice more
    }
    // A fifth takes the oldest's place; the other three stay.
    Slot& fifth = slot(same[4]);
    CHECK(fifth.key == same[0]); // what was there: the caller sees it is not its own
    fifth = {same[4], 1};
    for (std::size_t i = 1; i < 4; ++i) CHECK(slot(same[i]).key == same[i]);
    CHECK(slot(same[4]).made == 1);
    CHECK(slot(same[0]).key != same[0]); // gone (and asking takes the next oldest's place)
}
