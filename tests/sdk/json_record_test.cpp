// The JSON record reader (detail/json_record.hpp) and the path patterns it
// uses for categories (detail/path_pattern.hpp): conformance, limits, the
// record and flat formats, both sinks, and a round trip through record_json.
#include <catch2/catch.hpp>

#include <switchboard/detail/json_record.hpp>
#include <switchboard/detail/path_pattern.hpp>
#include <switchboard/detail/record_data.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using sb::detail::CategoryMap;
using sb::detail::JsonError;
using sb::detail::JsonKeys;
using sb::detail::JsonOptions;
using sb::detail::JsonRecordReader;
using sb::detail::PathPattern;

// A leaf as text: "path=<type>:<value>", e.g. "a.b[0]=i:12".
std::string show(std::string_view path, const sb_value& v) {
    std::string out(path);
    out += '=';
    switch (v.type) {
    case SB_VALUE_STRING: out += "s:" + std::string(v.str, v.len); break;
    case SB_VALUE_INT: out += "i:" + std::to_string(v.i); break;
    case SB_VALUE_FLOAT: {
        char buf[64];
        std::snprintf(buf, sizeof buf, "f:%.17g", v.f);
        out += buf;
        break;
    }
    case SB_VALUE_BOOL: out += v.i ? "b:true" : "b:false"; break;
    default: out += "null";
    }
    return out;
}

struct Parsed {
    bool ok = false;
    JsonError error;
    std::vector<std::string> leaves;
};

Parsed parse(std::string_view text, JsonKeys keys = JsonKeys::sanitize) {
    Parsed p;
    p.ok = sb::detail::json_leaves(
        text,
        [&](std::string_view path, const sb_value& v) {
            // The path is NUL terminated for sinks that need a C string.
            CHECK(path.data()[path.size()] == '\0');
            p.leaves.push_back(show(path, v));
            return true;
        },
        p.error, JsonOptions{keys});
    return p;
}

std::vector<std::string> leaves_of(std::string_view text) {
    Parsed p = parse(text);
    INFO(text);
    INFO(p.error.text());
    REQUIRE(p.ok);
    return p.leaves;
}

// The error message (and offset) of an invalid document.
JsonError error_of(std::string_view text, JsonKeys keys = JsonKeys::sanitize) {
    Parsed p = parse(text, keys);
    INFO(text);
    REQUIRE_FALSE(p.ok);
    REQUIRE(p.error.message != nullptr);
    CHECK(p.error.offset <= text.size());
    return p.error;
}

bool contains(const char* haystack, std::string_view needle) {
    return haystack && std::string_view(haystack).find(needle) != std::string_view::npos;
}

// Leaves of a record, as "path=<type>:<value> [category]".
std::vector<std::string> record_leaves(const sb_record& r, bool with_category = true) {
    std::vector<std::string> out;
    for (const auto& l : r.data.leaves()) {
        sb_value v{l.type, l.str.data(), l.str.size(), l.i, l.f};
        out.push_back(show(l.path(), v) + (with_category ? " [" + l.category() + "]" : ""));
    }
    return out;
}

std::string nested(int depth, const std::string& open, const std::string& close,
                   const std::string& inner) {
    std::string s;
    for (int k = 0; k < depth; ++k) s += open;
    s += inner;
    for (int k = 0; k < depth; ++k) s += close;
    return s;
}

} // namespace

// ---------------------------------------------------------------------------
// Path patterns

TEST_CASE("path pattern: exact, index and wildcard", "[pattern]") {
    auto p = PathPattern::parse("citizen.name");
    REQUIRE(p);
    CHECK(p->matches("citizen.name"));
    CHECK_FALSE(p->matches("citizen.name.first"));
    CHECK_FALSE(p->matches("citizen.names"));
    CHECK_FALSE(p->matches("citizen"));
    CHECK_FALSE(p->matches("xcitizen.name"));
    CHECK_FALSE(p->subtree());

    auto any = PathPattern::parse("content.turns[*].text");
    REQUIRE(any);
    CHECK(any->matches("content.turns[0].text"));
    CHECK(any->matches("content.turns[65535].text"));
    CHECK_FALSE(any->matches("content.turns[0].from"));
    CHECK_FALSE(any->matches("content.turns.text"));
    CHECK_FALSE(any->matches("content.turns[0]"));

    auto one = PathPattern::parse("content.turns[2].text");
    REQUIRE(one);
    CHECK(one->matches("content.turns[2].text"));
    CHECK_FALSE(one->matches("content.turns[12].text"));
    CHECK_FALSE(one->matches("content.turns[20].text"));
    CHECK_FALSE(one->matches("content.turns[1].text"));

    auto nested_any = PathPattern::parse("m[*][1]");
    REQUIRE(nested_any);
    CHECK(nested_any->matches("m[7][1]"));
    CHECK_FALSE(nested_any->matches("m[7][2]"));
    CHECK_FALSE(nested_any->matches("m[7][1][0]"));
}

TEST_CASE("path pattern: subtree x.* takes everything under x, arrays included", "[pattern]") {
    auto p = PathPattern::parse("citizen.*");
    REQUIRE(p);
    CHECK(p->subtree());
    CHECK(p->matches("citizen.name"));
    CHECK(p->matches("citizen.address.postcode"));
    CHECK(p->matches("citizen[0]"));
    CHECK(p->matches("citizen[3].phone"));
    CHECK_FALSE(p->matches("citizen")); // not x itself
    CHECK_FALSE(p->matches("citizenship.x"));
    CHECK_FALSE(p->matches("other.citizen.name"));

    auto deep = PathPattern::parse("content.turns[*].*");
    REQUIRE(deep);
    CHECK(deep->matches("content.turns[1].text"));
    CHECK(deep->matches("content.turns[1].meta.x"));
    CHECK_FALSE(deep->matches("content.turns[1]"));

    auto all = PathPattern::parse("*");
    REQUIRE(all);
    CHECK(all->matches("a"));
    CHECK(all->matches("a.b[3].c"));
    CHECK(all->first_key().empty());
}

TEST_CASE("path pattern: specificity orders overlapping patterns", "[pattern]") {
    auto score = [](const char* t) { return PathPattern::parse(t)->specificity(); };
    // Exact leaves beat subtrees, literal segments beat wildcards, deeper
    // subtrees beat shallower ones.
    CHECK(score("citizen.name") > score("citizen.*"));
    CHECK(score("citizen.address.*") > score("citizen.*"));
    CHECK(score("citizen.*") > score("*"));
    CHECK(score("content.turns[2].text") > score("content.turns[*].text"));
    CHECK(score("content.turns[*].text") > score("content.turns[*].*"));
    CHECK(score("a") > score("a.b.c.d.e.*")); // any exact leaf beats any subtree

    std::vector<std::pair<PathPattern, std::string>> rules;
    for (auto [p, c] : std::vector<std::pair<const char*, const char*>>{
             {"*", "everything"},
             {"citizen.*", "identity"},
             {"citizen.name", "identity.name"},
             {"citizen.address.*", "location.address"},
             {"content.turns[*].text", "content.free_text"},
             {"content.turns[0].text", "content.first"}})
        rules.emplace_back(*PathPattern::parse(p), c);
    auto best = [&](const char* path) {
        const std::string* c = sb::detail::most_specific(rules, path);
        return c ? *c : "none";
    };
    CHECK(best("citizen.name") == "identity.name");
    CHECK(best("citizen.dob") == "identity");
    CHECK(best("citizen.address.postcode") == "location.address");
    CHECK(best("content.turns[3].text") == "content.free_text");
    CHECK(best("content.turns[0].text") == "content.first");
    CHECK(best("content.turns[3].from") == "everything");
    CHECK(best("x") == "everything");

    // CategoryMap::category_for (which skips rules by first key) agrees with
    // most_specific everywhere, and says "unknown" where nothing matches.
    CategoryMap m;
    for (const auto& [p, c] : rules)
        if (c != "everything") REQUIRE(m.add(p.text(), c));
    for (const char* path : {"citizen.name", "citizen.dob", "citizen.address.postcode",
                             "content.turns[3].text", "content.turns[0].text", "citizen[2].x"}) {
        INFO(path);
        CHECK(std::string(m.category_for(path)) == best(path));
    }
    CHECK(std::string(m.category_for("content.turns[3].from")) == "unknown");
    CHECK(std::string(m.category_for("x")) == "unknown");
}

TEST_CASE("path pattern: malformed patterns are refused", "[pattern]") {
    for (const char* bad : {"", ".", ".*", "a.", ".a", "a..b", "a[", "a[]", "a[x]", "a[1",
                            "a[-1]", "a[99999999]", "a[65536]", "[0]", "[*]", "*.a", "a.*.b",
                            "a b", "**", "a.**", "a*", "a[*", "a]", "a.[0]", "é"}) {
        INFO(bad);
        CHECK_FALSE(PathPattern::parse(bad));
    }
    for (const char* good : {"a", "a-b_c", "a[65535]", "a[*]", "a.*", "a[0].*", "*", "A9.b"}) {
        INFO(good);
        CHECK(PathPattern::parse(good));
    }
}

TEST_CASE("category map from config lines", "[category]") {
    std::string why;
    auto m = CategoryMap::from_list({"citizen.name=identity.name", " citizen.* = identity ",
                                     "content.turns[*].text=content.free_text"},
                                    why);
    REQUIRE(m);
    CHECK(m->size() == 3);
    CHECK(std::string(m->category_for("citizen.name")) == "identity.name");
    CHECK(std::string(m->category_for("citizen.email")) == "identity");
    CHECK(std::string(m->category_for("content.turns[4].text")) == "content.free_text");

    CHECK_FALSE(CategoryMap::from_list({"citizen.name"}, why));
    CHECK(why == "entry 1: expected pattern=category");
    CHECK_FALSE(CategoryMap::from_list({"a=b", "a..b=c"}, why));
    CHECK(why == "entry 2: malformed path pattern");
    CHECK_FALSE(CategoryMap::from_list({"a=Identity Name"}, why));
    CHECK(why == "entry 1: category must be [a-z0-9_.]+");
    CHECK_FALSE(CategoryMap::from_list({"a="}, why));
}

// ---------------------------------------------------------------------------
// Leaves

TEST_CASE("json: leaves with canonical paths and typed values", "[json]") {
    CHECK(leaves_of(R"({"a":{"b":[1,2.5,"x",true,false,null]},"c":"d"})") ==
          std::vector<std::string>{"a.b[0]=i:1", "a.b[1]=f:2.5", "a.b[2]=s:x", "a.b[3]=b:true",
                                   "a.b[4]=b:false", "a.b[5]=null", "c=s:d"});
    CHECK(leaves_of(R"({"m":[[1,2],[3]],"o":[{"k":1},{"k":2}]})") ==
          std::vector<std::string>{"m[0][0]=i:1", "m[0][1]=i:2", "m[1][0]=i:3", "o[0].k=i:1",
                                   "o[1].k=i:2"});
    // Whitespace of all four kinds, anywhere it is allowed.
    CHECK(leaves_of(" \t\r\n{ \"a\" : [ 1 , { \"b\" :\n\"c\" } ] }\n ") ==
          std::vector<std::string>{"a[0]=i:1", "a[1].b=s:c"});
    // Empty containers produce no leaves.
    CHECK(leaves_of("{}").empty());
    CHECK(leaves_of(R"({"a":{},"b":[],"c":[{},[]],"d":1})") ==
          std::vector<std::string>{"d=i:1"});
    CHECK(leaves_of(R"({"s":""})") == std::vector<std::string>{"s=s:"});
}

TEST_CASE("json: invalid documents are refused with an offset", "[json]") {
    struct Case {
        const char* text;
        const char* message;
        std::size_t offset;
    };
    for (const Case& c : std::vector<Case>{
             {"", "expected an object", 0},
             {"   ", "expected an object", 3},
             {"[1]", "expected an object", 0},
             {"\"a\"", "expected an object", 0},
             {"1", "expected an object", 0},
             {"{", "expected a string key", 1},
             {"{\"a\"}", "expected ':'", 4},
             {"{\"a\":}", "expected a value", 5},
             {"{\"a\":1,}", "trailing comma", 7},
             {"{\"a\":[1,]}", "trailing comma", 8},
             {"{\"a\":[1 2]}", "expected ',' or ']'", 8},
             {"{\"a\":1 \"b\":2}", "expected ',' or '}'", 7},
             {"{\"a\":1", "unexpected end of input", 6},
             {"{\"a\":[1", "unexpected end of input", 7},
             {"{a:1}", "expected a string key", 1},
             {"{'a':1}", "expected a string key", 1},
             {"{\"a\":'x'}", "expected a value", 5},
             {"{\"a\":tru}", "expected a value", 5},
             {"{\"a\":True}", "expected a value", 5},
             {"{\"a\":nul}", "expected a value", 5},
             {"{\"a\":1}x", "trailing characters", 7},
             {"{\"a\":1}{}", "trailing characters", 7},
             {"{\"a\":1},", "trailing characters", 7},
             {"{\"a\":\"x}", "unterminated string", 5},
             {"{\"a\":1,,\"b\":2}", "expected a string key", 7},
             {"\xEF\xBB\xBF{}", "expected an object", 0}, // BOM
         }) {
        INFO("document: " << c.text);
        JsonError e = error_of(c.text);
        CHECK(contains(e.message, c.message));
        CHECK(e.offset == c.offset);
        // The message never echoes the input.
        CHECK(e.text() == std::string(e.message) + " at byte " + std::to_string(e.offset));
    }
    // A NUL byte after the document is trailing garbage, not an end marker.
    std::string with_nul("{\"a\":1}\0", 8);
    JsonError e = error_of(with_nul);
    CHECK(contains(e.message, "trailing characters"));
    CHECK(e.offset == 7);
}

TEST_CASE("json: numbers", "[json]") {
    auto one = [](const std::string& literal) {
        auto l = leaves_of("{\"n\":" + literal + "}");
        REQUIRE(l.size() == 1);
        return l[0].substr(2);
    };
    CHECK(one("0") == "i:0");
    CHECK(one("-0") == "i:0"); // integers have no negative zero
    CHECK(one("42") == "i:42");
    CHECK(one("-42") == "i:-42");
    CHECK(one("9223372036854775807") == "i:9223372036854775807");
    CHECK(one("-9223372036854775808") == "i:-9223372036854775808");
    CHECK(one("1.5") == "f:1.5");
    CHECK(one("1E2") == "f:100");
    CHECK(one("1e+2") == "f:100");
    CHECK(one("25e-1") == "f:2.5");
    CHECK(one("1.0") == "f:1");
    CHECK(one("0.1") == "f:0.10000000000000001");
    CHECK(one("1e308") == "f:1e+308");
    CHECK(one("-1.7976931348623157e308") == "f:-1.7976931348623157e+308");
    CHECK(one("5e-324") == "f:4.9406564584124654e-324"); // smallest subnormal
    CHECK(one("1e-400") == "f:0");                      // underflow: zero
    CHECK(one("0.000000000000000000001e-400") == "f:0");

    // -0.0 keeps its sign as a float.
    {
        sb_value got{};
        JsonError e;
        REQUIRE(sb::detail::json_leaves(
            "{\"n\":-0.0}", [&](std::string_view, const sb_value& v) { got = v; return true; }, e));
        CHECK(got.type == SB_VALUE_FLOAT);
        CHECK(got.f == 0.0);
        CHECK(std::signbit(got.f));
    }

    for (const char* bad : {"01", "-01", "00", "1.", ".5", "+1", "-", "1e", "1e+", "1.e5",
                            "0x10", "NaN", "Infinity", "-Infinity", "1_000", "--1", "1.5.5"}) {
        INFO(bad);
        error_of(std::string("{\"n\":") + bad + "}");
    }
    CHECK(contains(error_of("{\"n\":01}").message, "leading zero"));
    // Out of range: an error, never a silently rounded value.
    CHECK(contains(error_of("{\"n\":9223372036854775808}").message, "integer out of range"));
    CHECK(contains(error_of("{\"n\":-9223372036854775809}").message, "integer out of range"));
    CHECK(contains(error_of("{\"n\":123456789012345678901234567890}").message,
                   "integer out of range"));
    CHECK(contains(error_of("{\"n\":1e309}").message, "number out of range"));
    CHECK(contains(error_of("{\"n\":-1e309}").message, "number out of range"));
    CHECK(contains(error_of("{\"n\":123456789e400}").message, "number out of range"));
    CHECK(error_of("{\"n\":1e309}").offset == 5);
}

TEST_CASE("json: string escapes decode to UTF-8", "[json]") {
    auto one = [](const std::string& literal) {
        auto l = leaves_of("{\"s\":" + literal + "}");
        REQUIRE(l.size() == 1);
        return l[0].substr(4);
    };
    CHECK(one(R"("a\"b\\c\/d")") == "a\"b\\c/d");
    CHECK(one(R"("\b\f\n\r\t")") == "\b\f\n\r\t");
    CHECK(one(R"("\u0041\u00e9\u20AC")") == "A\xC3\xA9\xE2\x82\xAC");
    CHECK(one(R"("\ud83d\ude00")") == "\xF0\x9F\x98\x80"); // U+1F600
    CHECK(one(R"("\uDBFF\uDFFF")") == "\xF4\x8F\xBF\xBF"); // U+10FFFF
    CHECK(one(R"("x\u0000y")") == std::string("x\0y", 3));  // NUL kept: values have lengths
    CHECK(one(R"("plain then \n escaped then a long plain run of text")") ==
          "plain then \n escaped then a long plain run of text");
    CHECK(one("\"\x7f\"") == "\x7f"); // DEL is not a control character in JSON

    struct Bad {
        const char* literal;
        const char* message;
    };
    for (const Bad& b : std::vector<Bad>{
             {R"("\x41")", "invalid escape"},
             {R"("\U00000041")", "invalid escape"},
             {R"("\a")", "invalid escape"},
             {R"("\u41")", "invalid \\u escape"},
             {R"("\u00G1")", "invalid \\u escape"},
             {R"("\ud83d")", "lone surrogate"},
             {R"("\ude00")", "lone surrogate"},
             {R"("\ud83d\u0041")", "lone surrogate"},
             {R"("\ud83dx")", "lone surrogate"},
             {"\"a\tb\"", "control character"},
             {"\"a\nb\"", "control character"},
             {"\"a\x01 b\"", "control character"},
             {"\"\\", "invalid escape"}, // the backslash escapes the closing brace
         }) {
        INFO(b.literal);
        CHECK(contains(error_of(std::string("{\"s\":") + b.literal + "}").message, b.message));
    }
    CHECK(contains(error_of("{\"s\":\"\\").message, "unterminated string"));
    CHECK(contains(error_of("{\"s\":\"abc\\\"}").message, "unterminated string"));
    // The offset points at the escape.
    CHECK(error_of(R"({"s":"abc\q"})").offset == 9);
}

TEST_CASE("json: UTF-8 is validated in values and keys", "[json]") {
    for (const char* good : {"caf\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80", "\xED\x9F\xBF",
                             "\xEF\xBF\xBF", "\xF4\x8F\xBF\xBF"}) {
        auto l = leaves_of(std::string("{\"s\":\"") + good + "\"}");
        REQUIRE(l.size() == 1);
        CHECK(l[0] == std::string("s=s:") + good);
    }
    for (const char* bad : {
             "\xC0\x80",         // overlong NUL
             "\xC1\xBF",         // overlong
             "\xE0\x80\xAF",     // overlong
             "\xED\xA0\x80",     // UTF-16 surrogate
             "\xF4\x90\x80\x80", // above U+10FFFF
             "\xF5\x80\x80\x80", // invalid lead
             "\xFF",             //
             "\x80",             // lone continuation
             "\xE2\x82",         // truncated (before the closing quote)
             "\xC3\x28",         // bad continuation
         }) {
        INFO("bytes: " << bad);
        CHECK(contains(error_of(std::string("{\"s\":\"") + bad + "\"}").message, "invalid UTF-8"));
        CHECK(contains(error_of(std::string("{\"") + bad + "\":1}").message, "invalid UTF-8"));
    }
    // Long strings cross the 16-byte scanning blocks with a fault at every position.
    for (std::size_t at = 0; at < 40; ++at) {
        std::string s(40, 'x');
        s[at] = '\x80';
        JsonError e = error_of("{\"s\":\"" + s + "\"}");
        CHECK(contains(e.message, "invalid UTF-8"));
        CHECK(e.offset == 6 + at);
        s[at] = '\x1f';
        e = error_of("{\"s\":\"" + s + "\"}");
        CHECK(contains(e.message, "control character"));
        CHECK(e.offset == 6 + at);
    }
}

TEST_CASE("json: keys outside [A-Za-z0-9_-] are mapped, or refused on request", "[json]") {
    CHECK(leaves_of(R"({"_raw":{"uuid":"u"},"sentry-trace":"t","A9":1})") ==
          std::vector<std::string>{"_raw.uuid=s:u", "sentry-trace=s:t", "A9=i:1"});
    CHECK(leaves_of(R"({"Customer Name":"x","@id":"y","":"z","caf\u00e9":1,"a.b[0]":2})") ==
          std::vector<std::string>{"Customer_Name=s:x", "_id=s:y", "_=s:z", "caf_=i:1",
                                   "a_b_0_=i:2"});
    CHECK(sb::detail::sanitize_json_key("  lots   of  space ") == "_lots_of_space_");
    CHECK(sb::detail::sanitize_json_key("ok-key_1") == "ok-key_1");
    // An escape that decodes to plain characters is a plain key.
    CHECK(leaves_of(R"({"\u0061b":1})") == std::vector<std::string>{"ab=i:1"});
    CHECK(leaves_of(R"({"a\u0020b":1})") == std::vector<std::string>{"a_b=i:1"});
    // Two keys that map to one name are a duplicate, not a silent overwrite.
    JsonError e = error_of(R"({"a b":1,"a_b":2})");
    CHECK(contains(e.message, "duplicate key"));
    CHECK(e.offset == 9);
    CHECK(contains(error_of(R"({"@id":1,"#id":2})").message, "duplicate key"));

    // Reject policy.
    CHECK(parse(R"({"_raw":1,"sentry-trace":2})", JsonKeys::reject).ok);
    for (const char* bad : {R"({"Customer Name":1})", R"({"@id":1})", R"({"":1})",
                            R"({"a":{"x.y":1}})"}) {
        INFO(bad);
        CHECK(contains(error_of(bad, JsonKeys::reject).message, "key is not [A-Za-z0-9_-]+"));
    }
}

TEST_CASE("json: duplicate keys", "[json]") {
    CHECK(contains(error_of(R"({"a":1,"a":2})").message, "duplicate key"));
    CHECK(contains(error_of(R"({"a":{"b":1,"c":2,"b":3}})").message, "duplicate key"));
    CHECK(error_of(R"({"a":{"b":1,"c":2,"b":3}})").offset == 18);
    // The same key in different objects is fine.
    CHECK(leaves_of(R"({"a":{"k":1},"b":{"k":2},"c":[{"k":3},{"k":4}]})").size() == 4);
    // Keys that share a fingerprint (length, first and last 8 bytes) but differ.
    CHECK(leaves_of(R"({"abcdefgh-1-abcdefgh":1,"abcdefgh-2-abcdefgh":2})").size() == 2);

    // Big objects use a hash table: still exact, both ways.
    for (int n : {31, 32, 33, 100, 3000}) {
        std::string doc = "{";
        for (int k = 0; k < n; ++k) doc += (k ? ",\"key" : "\"key") + std::to_string(k) + "\":" + std::to_string(k);
        INFO(n);
        CHECK(leaves_of(doc + "}").size() == static_cast<std::size_t>(n));
        for (int dup : {0, n / 2, n - 1}) {
            std::string with_dup = doc + ",\"key" + std::to_string(dup) + "\":0}";
            CHECK(contains(error_of(with_dup).message, "duplicate key"));
        }
        // After a big object closes, its siblings and parents start afresh.
        std::string outer = "{\"big\":" + doc + "},\"key1\":1,\"x\":{\"key1\":2}}";
        CHECK(leaves_of(outer).size() == static_cast<std::size_t>(n) + 2);
    }
}

TEST_CASE("json: nesting, index and path limits", "[json]") {
    // 32 segments: the deepest leaf a record can hold.
    std::string ok32 = "{\"k\":" + nested(31, "{\"k\":", "}", "1") + "}";
    auto l = leaves_of(ok32);
    REQUIRE(l.size() == 1);
    std::vector<sb::detail::PathSegment> segs;
    std::string path = l[0].substr(0, l[0].find('='));
    REQUIRE(sb::detail::parse_path(path, segs));
    CHECK(segs.size() == 32);
    // 33 is refused, empty or not.
    CHECK(contains(error_of("{\"k\":" + nested(32, "{\"k\":", "}", "1") + "}").message,
                   "nesting deeper than 32"));
    CHECK(contains(error_of("{\"k\":" + nested(31, "{\"k\":", "}", "{}") + "}").message,
                   "nesting deeper than 32"));
    CHECK(leaves_of("{\"a\":" + nested(31, "[", "]", "1") + "}").size() == 1);
    CHECK(contains(error_of("{\"a\":" + nested(32, "[", "]", "1") + "}").message,
                   "nesting deeper than 32"));
    // Hostile depth fails fast, without exhausting the stack.
    CHECK(contains(error_of("{\"a\":" + nested(100000, "[", "]", "1") + "}").message,
                   "nesting deeper than 32"));

    // Array indexes up to 65535.
    std::string arr = "{\"a\":[";
    for (int k = 0; k < 65536; ++k) arr += k ? ",0" : "0";
    auto big = parse(arr + "]}");
    REQUIRE(big.ok);
    CHECK(big.leaves.back() == "a[65535]=i:0");
    JsonError e = error_of(arr + ",0]}");
    CHECK(contains(e.message, "array index above 65535"));

    // Paths up to 512 bytes.
    std::string k250(250, 'k');
    CHECK(leaves_of("{\"" + k250 + "\":{\"" + k250 + "\":{\"abcdefghij\":1}}}").size() == 1);
    CHECK(contains(error_of("{\"" + k250 + "\":{\"" + k250 + "\":{\"abcdefghijk\":1}}}").message,
                   "field path longer than 512 bytes"));
}

TEST_CASE("json: a reader is reusable after errors", "[json]") {
    JsonRecordReader r;
    std::vector<std::string> got;
    auto leaf = [&](std::string_view p, const sb_value& v) {
        got.push_back(show(p, v));
        return true;
    };
    for (int round = 0; round < 3; ++round) {
        got.clear();
        CHECK_FALSE(r.parse(R"({"a":{"b":[1,2,{"c":"\u00e9"}],"b":1,)", leaf));
        CHECK(r.error());
        got.clear();
        REQUIRE(r.parse(R"({"a":{"b":[1]},"b":"x\ny"})", leaf));
        CHECK_FALSE(r.error());
        CHECK(got == std::vector<std::string>{"a.b[0]=i:1", "b=s:x\ny"});
    }
    // A sink that says no stops the walk.
    int calls = 0;
    CHECK_FALSE(r.parse(R"({"a":1,"b":2,"c":3})", [&](std::string_view, const sb_value&) {
        return ++calls < 2;
    }));
    CHECK(calls == 2);
    CHECK(contains(r.error().message, "field refused"));
    CHECK(r.error().offset == 11);
}

TEST_CASE("json: mangled documents never crash and always explain", "[json]") {
    const std::string doc =
        R"({"meta":{"channel":"phone"},"fields":{"citizen":{"name":"J\u00e9 \"X\"","n":[1,-2.5e3,true,null]},)"
        R"("t":"long text long text long text long text"},"categories":{"citizen.*":"identity"}})";
    JsonRecordReader r;
    auto leaf = [](std::string_view, const sb_value&) { return true; };
    // Every strict prefix is refused.
    for (std::size_t n = 0; n < doc.size(); ++n) {
        INFO(n);
        CHECK_FALSE(r.parse(std::string_view(doc).substr(0, n), leaf));
        CHECK(r.error().offset <= n);
    }
    CHECK(r.parse(doc, leaf));
    // Random byte changes: either a clean parse or an error inside the text.
    std::mt19937 gen(12345);
    for (int k = 0; k < 20000; ++k) {
        std::string m = doc;
        int edits = 1 + static_cast<int>(gen() % 3);
        for (int e = 0; e < edits; ++e) m[gen() % m.size()] = static_cast<char>(gen() % 256);
        sb_record rec;
        sb::detail::DataRecordSink sink(rec);
        if (!r.read_record(m, sink)) CHECK(r.error().offset <= m.size());
        if (!r.parse(m, leaf)) CHECK(r.error().offset <= m.size());
    }
}

// ---------------------------------------------------------------------------
// The record format

namespace {

const char* kExample =
    R"({"meta":{"channel":"phone","occurred_at":"2025-01-06T09:44:05Z","external_id":"v-1001","subject_ref":"cust-77"},)"
    R"("fields":{"citizen":{"name":"Jane Example","phone":"07700 900123","address":{"postcode":"EX1 2MP"}},)"
    R"("content":{"turns":[{"from":"citizen","text":"My bin was missed"},{"from":"agent","text":"Sorry"}]},)"
    R"("queue":"waste","duration_s":312},)"
    R"("categories":{"citizen.name":"identity.name","content.turns[*].text":"content.free_text","citizen.*":"identity"},)"
    R"("attachments":[{"name":"recording","uri":"file:///spool/v-1001.wav","media_type":"audio/wav","size":2044,)"
    R"("sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","category":"media.voice"}]})";

const std::vector<std::string> kExampleLeaves = {
    "citizen.address.postcode=s:EX1 2MP [identity]",
    "citizen.name=s:Jane Example [identity.name]",
    "citizen.phone=s:07700 900123 [identity]",
    "content.turns[0].from=s:citizen [unknown]",
    "content.turns[0].text=s:My bin was missed [content.free_text]",
    "content.turns[1].from=s:agent [unknown]",
    "content.turns[1].text=s:Sorry [content.free_text]",
    "duration_s=i:312 [unknown]",
    "queue=s:waste [unknown]",
};

struct ReadResult {
    bool ok;
    JsonError error;
};

ReadResult read_record(std::string_view text, sb_record& rec,
                       const sb::detail::RecordReadOptions& o = {}) {
    ReadResult r{};
    r.ok = sb::detail::read_record_json(text, rec, r.error, o);
    return r;
}

JsonError record_error(std::string_view text, const sb::detail::RecordReadOptions& o = {}) {
    sb_record rec;
    ReadResult r = read_record(text, rec, o);
    INFO(text);
    REQUIRE_FALSE(r.ok);
    CHECK(r.error.offset <= text.size());
    return r.error;
}

} // namespace

TEST_CASE("record format: the example", "[record]") {
    sb_record rec;
    ReadResult r = read_record(kExample, rec);
    INFO(r.error.text());
    REQUIRE(r.ok);
    CHECK(std::string(rec.data.meta("channel")) == "phone");
    CHECK(std::string(rec.data.meta("occurred_at")) == "2025-01-06T09:44:05Z");
    CHECK(std::string(rec.data.meta("external_id")) == "v-1001");
    CHECK(std::string(rec.data.meta("subject_ref")) == "cust-77");
    CHECK(rec.data.meta("id") == nullptr);
    CHECK(record_leaves(rec) == kExampleLeaves);
    REQUIRE(rec.data.attachments().size() == 1);
    const auto& a = rec.data.attachments()[0];
    CHECK(a.name == "recording");
    CHECK(a.uri == "file:///spool/v-1001.wav");
    CHECK(a.media_type == "audio/wav");
    CHECK(a.size == 2044);
    CHECK(a.sha256.size() == 64);
    CHECK(a.category == "media.voice");
}

TEST_CASE("record format: key order does not matter", "[record]") {
    const std::string fields =
        R"("fields":{"citizen":{"name":"N","x":1},"content":{"turns":[{"text":"T"}]}})";
    const std::string cats =
        R"("categories":{"citizen.*":"identity","citizen.name":"identity.name","content.turns[*].text":"content.free_text"})";
    const std::string meta = R"("meta":{"channel":"web_chat"})";
    const std::vector<std::string> want = {"citizen.name=s:N [identity.name]",
                                           "citizen.x=i:1 [identity]",
                                           "content.turns[0].text=s:T [content.free_text]"};
    for (const std::string& doc :
         {"{" + fields + "," + cats + "," + meta + "}", "{" + cats + "," + fields + "," + meta + "}",
          "{" + meta + "," + fields + "," + cats + "}", "{" + cats + "," + meta + "," + fields + "}"}) {
        INFO(doc);
        sb_record rec;
        REQUIRE(read_record(doc, rec).ok);
        CHECK(record_leaves(rec) == want);
        CHECK(std::string(rec.data.meta("channel")) == "web_chat");
    }
}

TEST_CASE("record format: categories come from the line, else the fallback", "[record]") {
    std::string why;
    auto fallback = CategoryMap::from_list({"a=fallback.a", "*=fallback.any"}, why);
    REQUIRE(fallback);
    sb::detail::RecordReadOptions o;
    o.fallback = &*fallback;

    sb_record with;
    REQUIRE(read_record(R"({"fields":{"a":1,"b":2},"categories":{"b":"line.b"}})", with, o).ok);
    CHECK(record_leaves(with) == std::vector<std::string>{"a=i:1 [unknown]", "b=i:2 [line.b]"});

    sb_record without;
    REQUIRE(read_record(R"({"fields":{"a":1,"b":2}})", without, o).ok);
    CHECK(record_leaves(without) ==
          std::vector<std::string>{"a=i:1 [fallback.a]", "b=i:2 [fallback.any]"});

    sb_record none;
    REQUIRE(read_record(R"({"fields":{"a":1}})", none).ok);
    CHECK(record_leaves(none) == std::vector<std::string>{"a=i:1 [unknown]"});

    // An empty categories object is still the line's own: nothing matches.
    sb_record empty;
    REQUIRE(read_record(R"({"fields":{"a":1},"categories":{}})", empty, o).ok);
    CHECK(record_leaves(empty) == std::vector<std::string>{"a=i:1 [unknown]"});
}

TEST_CASE("record format: one reader across lines with changing categories", "[record]") {
    // The reader reuses the previous line's parsed categories when the bytes
    // repeat; a change must be seen.
    JsonRecordReader r;
    const char* lines[] = {
        R"({"categories":{"a":"one.a"},"fields":{"a":1}})",
        R"({"categories":{"a":"one.a"},"fields":{"a":2}})",
        R"({"categories":{"a":"two.a"},"fields":{"a":3}})",
        R"({"categories":{"a":"two.a","b":"two.b"},"fields":{"a":4,"b":5}})",
        R"({"fields":{"a":6}})",
        R"({"categories":{"a":"two.a"},"fields":{"a":7}})",
    };
    const std::vector<std::vector<std::string>> want = {
        {"a=i:1 [one.a]"}, {"a=i:2 [one.a]"}, {"a=i:3 [two.a]"},
        {"a=i:4 [two.a]", "b=i:5 [two.b]"}, {"a=i:6 [unknown]"}, {"a=i:7 [two.a]"}};
    for (std::size_t k = 0; k < std::size(lines); ++k) {
        INFO(lines[k]);
        sb_record rec;
        sb::detail::DataRecordSink sink(rec);
        REQUIRE(r.read_record(lines[k], sink));
        CHECK(record_leaves(rec) == want[k]);
    }
    // A malformed categories object after a good one is still refused.
    sb_record rec;
    sb::detail::DataRecordSink sink(rec);
    CHECK_FALSE(r.read_record(R"({"categories":{"a":"two.a","a":"x"},"fields":{"a":7}})", sink));
    CHECK(contains(r.error().message, "duplicate key"));
    CHECK_FALSE(r.read_record(R"({"categories":{"a":"two.a"}x,"fields":{"a":7}})", sink));
}

TEST_CASE("record format: meta follows record_set_meta's rules", "[record]") {
    CHECK(contains(record_error(R"({"meta":{"id":"r-1"}})").message, "unknown meta key"));
    CHECK(contains(record_error(R"({"meta":{"source":"x"}})").message, "unknown meta key"));
    CHECK(contains(record_error(R"({"meta":{"channel":"a","colour":"b"}})").message,
                   "unknown meta key"));
    CHECK(record_error(R"({"meta":{"channel":"a","colour":"b"}})").offset == 23);
    CHECK(contains(record_error(R"({"meta":{"channel":7}})").message, "meta values must be strings"));
    CHECK(contains(record_error(R"({"meta":{"channel":null}})").message, "meta values must be strings"));
    CHECK(contains(record_error(R"({"meta":{"occurred_at":"yesterday"}})").message,
                   "meta time is not RFC 3339"));
    CHECK(contains(record_error(R"({"meta":{"occurred_at":"2025-02-30T00:00:00Z"}})").message,
                   "RFC 3339"));
    CHECK(contains(record_error(R"({"meta":{"channel":"a\u0000b"}})").message, "NUL"));
    CHECK(contains(record_error(R"({"meta":{"external_id":""}})").message,
                   "meta external_id is empty"));
    CHECK(contains(record_error(R"({"meta":[]})").message, "meta must be an object"));
    CHECK(contains(record_error(R"({"meta":{"channel":"a","channel":"b"}})").message,
                   "duplicate key"));
    sb_record rec;
    REQUIRE(read_record(R"({"meta":{"occurred_at":"2025-01-06T09:44:05.123+01:00"},"meta2":1})", rec)
                .ok == false);
    sb_record ok;
    REQUIRE(read_record(R"({"meta":{"occurred_at":"2025-01-06T09:44:05.123+01:00"},"fields":{}})", ok)
                .ok);
    CHECK(std::string(ok.data.meta("occurred_at")) == "2025-01-06T09:44:05.123+01:00");
}

TEST_CASE("record format: structure errors", "[record]") {
    CHECK(contains(record_error(R"({"field":{}})").message, "unknown top-level key"));
    CHECK(contains(record_error(R"({"id":"x","fields":{}})").message, "unknown top-level key"));
    CHECK(contains(record_error(R"({"fields":[]})").message, "fields must be an object"));
    CHECK(contains(record_error(R"({"fields":"x"})").message, "fields must be an object"));
    CHECK(contains(record_error(R"({"fields":{},"fields":{}})").message, "duplicate key"));
    CHECK(contains(record_error(R"({"categories":[]})").message, "categories must be an object"));
    CHECK(contains(record_error(R"({"categories":{"a..b":"x"}})").message,
                   "malformed category pattern"));
    CHECK(contains(record_error(R"({"categories":{"a":"Not A Category"}})").message,
                   "category must be [a-z0-9_.]+"));
    CHECK(contains(record_error(R"({"categories":{"a":1}})").message, "category must be a string"));
    CHECK(contains(record_error(R"({"fields":{"a":1},"categories":{"a":"x"},})").message,
                   "trailing comma"));
    CHECK(contains(record_error(R"({"fields":{"a":1}} )" "x").message, "trailing characters"));
    CHECK(contains(record_error("[]").message, "expected an object"));
    sb_record empty;
    CHECK(read_record("{}", empty).ok); // empty is readable; the host refuses to emit it
}

TEST_CASE("record format: attachments", "[record]") {
    sb_record rec;
    ReadResult r = read_record(
        R"({"attachments":[{"uri":"file:///a"},{"name":"scan","uri":"https://x/y","media_type":"image/png","size":-1,"sha256":null,"category":"media.image"}]})",
        rec);
    INFO(r.error.text());
    REQUIRE(r.ok);
    REQUIRE(rec.data.attachments().size() == 2);
    CHECK(rec.data.attachments()[0].uri == "file:///a");
    CHECK(rec.data.attachments()[0].media_type == "application/octet-stream");
    CHECK(rec.data.attachments()[0].category == "unknown");
    CHECK(rec.data.attachments()[0].size == -1);
    CHECK(rec.data.attachments()[1].name == "scan");
    CHECK(rec.data.attachments()[1].sha256.empty());

    CHECK(contains(record_error(R"({"attachments":{}})").message, "attachments must be an array"));
    CHECK(contains(record_error(R"({"attachments":[1]})").message, "attachment must be an object"));
    CHECK(contains(record_error(R"({"attachments":[{"name":"x"}]})").message, "attachment has no uri"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":""}]})").message, "attachment has no uri"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","path":"/x"}]})").message,
                   "unknown attachment key"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","size":1.5}]})").message,
                   "attachment size must be an integer"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","size":-2}]})").message,
                   "attachment size must be an integer"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","size":"12"}]})").message,
                   "attachment size must be an integer"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","sha256":"ABC"}]})").message,
                   "sha256"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","name":7}]})").message,
                   "attachment values must be strings"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u"},]})").message, "trailing comma"));
    CHECK(contains(record_error(R"({"attachments":[{"uri":"u","uri":"v"}]})").message,
                   "duplicate key"));
}

TEST_CASE("record format: the two sinks agree", "[record]") {
    // Core side: sb_record's data directly.
    sb_record direct;
    REQUIRE(read_record(kExample, direct).ok);

    // Plugin side: through the host API table, as a plugin reaches the host.
    sb_host_api api{};
    sb::detail::fill_record_api(api);
    sb_record via_api;
    sb::detail::HostRecordSink sink(&api, &via_api);
    JsonRecordReader r;
    REQUIRE(r.read_record(kExample, sink));
    CHECK(record_leaves(via_api) == record_leaves(direct));
    CHECK(via_api.data.json() == direct.data.json());

    // The host API refuses the host's own meta keys even when asked to read
    // record_json's shape.
    sb_record other;
    sb::detail::HostRecordSink other_sink(&api, &other);
    sb::detail::RecordReadOptions o;
    o.envelope = true;
    CHECK_FALSE(r.read_record(R"({"meta":{"source":"x"}})", other_sink, o));
    CHECK(contains(r.error().message, "meta value refused"));
}

namespace shapes_counted {
// The host's shape functions, counting the shapes alive.
int alive = 0, made = 0;
sb_shape* shape_new(const char* const* paths, const char* const* categories, size_t n) {
    sb_shape* s = sb::detail::shape_new(paths, categories, n);
    if (s) ++alive, ++made;
    return s;
}
void shape_free(sb_shape* s) {
    if (s) --alive;
    sb::detail::shape_free(s);
}
} // namespace shapes_counted

TEST_CASE("flat format: the jsonl source's SortingSink sets the same records on hosts with and "
          "without shapes (ABI 1.2), and frees its shapes",
          "[record]") {
    std::string why;
    auto cats = CategoryMap::from_list({"name=identity.name", "contact.*=contact"}, why);
    REQUIRE(cats);
    sb::detail::FlatReadOptions plain;
    plain.categories = &*cats;
    plain.external_id_field = "ref";
    sb::detail::FlatReadOptions sorted = plain;
    sorted.categories = nullptr; // the sink finds them, once per shape

    sb_host_api with_shapes{};
    sb::detail::fill_record_api(with_shapes);
    with_shapes.struct_size = sizeof with_shapes;
    with_shapes.shape_new = &shapes_counted::shape_new;
    with_shapes.shape_free = &shapes_counted::shape_free;
    sb_host_api older = with_shapes; // an ABI 1.1 host: its table ends before the shapes
    older.struct_size = offsetof(sb_host_api, shape_new);

    // Two shapes taking turns, their keys in different orders, then more
    // shapes than the sink keeps.
    std::vector<std::string> lines;
    for (int i = 0; i < 6; ++i) {
        lines.push_back(R"({"ref":"R)" + std::to_string(i) + R"(","name":"Ann","n":)" + std::to_string(i) +
                        R"(,"contact":{"phone":"0","email":"a@example.org"},"tags":["x",true,null,1.5]})");
        lines.push_back(R"({"contact":{"email":"b@example.org"},"name":"Bo","ref":"S)" + std::to_string(i) +
                        R"("})");
    }
    // Escaped values are decoded into the reader's one buffer, reused for
    // the next: the sink copies those, and takes the others from the line.
    for (int i = 0; i < 3; ++i)
        lines.push_back(R"({"name":"A\"nn )" + std::to_string(i) +
                        R"(","contact":{"phone":"0\u0031","email":"x\\y@example.org"},"ref":"R\n1","n":2,)"
                        R"("tags":["plain","\t",""]})");
    for (int i = 0; i < 300; ++i)
        lines.push_back(R"({"ref":"T)" + std::to_string(i) + R"(","f)" + std::to_string(i) + R"(":"v"})");

    shapes_counted::alive = shapes_counted::made = 0;
    {
        sb::detail::SortingSink shaped(&with_shapes, &*cats);
        sb::detail::SortingSink unshaped(&older, &*cats);
        JsonRecordReader reader;
        for (const std::string& line : lines) {
            INFO(line);
            sb_record want;
            JsonError e;
            REQUIRE(sb::detail::read_flat_json(line, want, e, plain));
            sb_record a, b;
            shaped.begin(&a, line); // string values without escapes not copied
            REQUIRE(reader.read_flat(line, shaped, sorted));
            REQUIRE(shaped.finish() == SB_OK);
            unshaped.begin(&b);
            REQUIRE(reader.read_flat(line, unshaped, sorted));
            REQUIRE(unshaped.finish() == SB_OK);
            CHECK(record_leaves(a) == record_leaves(want));
            CHECK(record_leaves(b) == record_leaves(want));
            CHECK(a.data.json() == want.data.json());
        }
        CHECK(shapes_counted::made == 303); // one per shape: the older host was given none
        CHECK(shapes_counted::alive <= 256);  // the sink keeps so many, and frees the others
        CHECK(shapes_counted::alive > 0);
    }
    CHECK(shapes_counted::alive == 0); // and frees the rest with itself
}

TEST_CASE("flat format", "[record]") {
    std::string why;
    auto cats = CategoryMap::from_list(
        {"name=identity.name", "contact.*=contact", "contact.email=contact.email"}, why);
    REQUIRE(cats);
    sb::detail::FlatReadOptions o;
    o.categories = &*cats;
    o.external_id_field = "ref.id";
    o.occurred_at_field = "when";

    sb_record rec;
    JsonError e;
    REQUIRE(sb::detail::read_flat_json(
        R"({"name":"Ann","contact":{"email":"a@example.org","phone":"0"},"ref":{"id":"Q-9"},"when":"2025-01-06T10:00:00Z","n":[1]})",
        rec, e, o));
    CHECK(record_leaves(rec) == std::vector<std::string>{
                                    "contact.email=s:a@example.org [contact.email]",
                                    "contact.phone=s:0 [contact]", "n[0]=i:1 [unknown]",
                                    "name=s:Ann [identity.name]", "ref.id=s:Q-9 [unknown]",
                                    "when=s:2025-01-06T10:00:00Z [unknown]"});
    CHECK(std::string(rec.data.meta("external_id")) == "Q-9");
    CHECK(std::string(rec.data.meta("occurred_at")) == "2025-01-06T10:00:00Z");

    sb_record num;
    REQUIRE(sb::detail::read_flat_json(R"({"ref":{"id":12345}})", num, e, o));
    CHECK(std::string(num.data.meta("external_id")) == "12345");

    sb_record bad;
    CHECK_FALSE(sb::detail::read_flat_json(R"({"ref":{"id":true}})", bad, e, o));
    CHECK(contains(e.message, "external_id field must be a non-empty string or an integer"));
    CHECK(e.offset == 13);
    CHECK_FALSE(sb::detail::read_flat_json(R"({"ref":{"id":""}})", bad, e, o));
    CHECK(contains(e.message, "external_id field must be a non-empty string"));
    CHECK_FALSE(sb::detail::read_flat_json(R"({"when":"soon"})", bad, e, o));
    CHECK(contains(e.message, "occurred_at field must be an RFC 3339 string"));
    // No categories at all: every leaf is unknown.
    sb_record plain;
    REQUIRE(sb::detail::read_flat_json(R"({"a":{"b":1}})", plain, e));
    CHECK(record_leaves(plain) == std::vector<std::string>{"a.b=i:1 [unknown]"});
    CHECK_FALSE(sb::detail::read_flat_json(R"({"a":1,"a":2})", plain, e));
}

// ---------------------------------------------------------------------------
// Round trip: record -> record_json -> parse -> the same leaves

TEST_CASE("round trip through record_json", "[record]") {
    sb_record rec;
    auto& d = rec.data;
    auto str = [&](const char* path, std::string_view v, const char* cat = "test.cat") {
        sb_value x{SB_VALUE_STRING, v.data(), v.size(), 0, 0};
        REQUIRE(d.set(path, x, cat) == SB_OK);
    };
    auto num = [&](const char* path, sb_value x) { REQUIRE(d.set(path, x, "test.num") == SB_OK); };
    str("citizen.name", "J\xC3\xA9r\xC3\xB4me \"Jo\" O'Neil\\");
    str("citizen.address.lines[0]", "1 Road\nFlat 2\t(rear)");
    str("citizen.address.lines[1]", std::string("nul\0inside\x01\x1f\x7f", 13));
    str("content.turns[0].text", "\xF0\x9F\x98\x80 emoji and \xE2\x82\xAC");
    str("content.turns[1].text", "");
    str("odd-key_1", "k");
    num("n.max", sb_value{SB_VALUE_INT, nullptr, 0, INT64_MAX, 0});
    num("n.min", sb_value{SB_VALUE_INT, nullptr, 0, INT64_MIN, 0});
    num("n.zero", sb_value{SB_VALUE_INT, nullptr, 0, 0, 0});
    num("n.f1", sb_value{SB_VALUE_FLOAT, nullptr, 0, 0, 0.1});
    num("n.f2", sb_value{SB_VALUE_FLOAT, nullptr, 0, 0, 1e308});
    num("n.f3", sb_value{SB_VALUE_FLOAT, nullptr, 0, 0, -0.0});
    num("n.f4", sb_value{SB_VALUE_FLOAT, nullptr, 0, 0, 5e-324});
    num("n.f5", sb_value{SB_VALUE_FLOAT, nullptr, 0, 0, 3.0});
    num("n.t", sb_value{SB_VALUE_BOOL, nullptr, 0, 1, 0});
    num("n.f", sb_value{SB_VALUE_BOOL, nullptr, 0, 0, 0});
    num("n.null", sb_value{SB_VALUE_NULL, nullptr, 0, 0, 0});
    num("m[0][0]", sb_value{SB_VALUE_INT, nullptr, 0, 1, 0});
    num("m[0][1]", sb_value{SB_VALUE_INT, nullptr, 0, 2, 0});
    num("m[1][0].x", sb_value{SB_VALUE_INT, nullptr, 0, 3, 0});
    REQUIRE(sb::detail::record_set_meta(&rec, "channel", "phone") == SB_OK);
    REQUIRE(sb::detail::record_set_meta(&rec, "external_id", "ext \"1\"") == SB_OK);
    REQUIRE(d.set_meta("id", "rec-000001") == SB_OK);
    REQUIRE(d.set_meta("received_at", "2025-01-06T09:00:00.000Z") == SB_OK);
    sb_attachment a{};
    a.struct_size = sizeof a;
    a.name = "recording";
    a.uri = "file:///x.wav";
    a.media_type = "audio/wav";
    a.size = 10;
    a.category = "media.voice";
    REQUIRE(d.add_attachment(a) == SB_OK);

    // The field tree alone, with the generic leaf parser.
    std::string fields;
    d.write_fields_json(fields);
    std::vector<std::string> parsed;
    JsonError e;
    REQUIRE(sb::detail::json_leaves(
        fields,
        [&](std::string_view p, const sb_value& v) {
            parsed.push_back(show(p, v));
            return true;
        },
        e));
    std::vector<std::string> original = record_leaves(rec, false);
    std::sort(parsed.begin(), parsed.end());
    std::vector<std::string> sorted = original;
    std::sort(sorted.begin(), sorted.end());
    CHECK(parsed == sorted);

    // The whole record_json, read back as a record (record_json carries no
    // categories, so they are compared without).
    sb_record back;
    sb::detail::RecordReadOptions o;
    o.envelope = true;
    ReadResult r = read_record(d.json(), back, o);
    INFO(r.error.text());
    REQUIRE(r.ok);
    CHECK(record_leaves(back, false) == original);
    CHECK(back.data.json() == d.json());
    CHECK(std::string(back.data.meta("id")) == "rec-000001");
    CHECK(std::string(back.data.meta("external_id")) == "ext \"1\"");

    // -0.0 kept its sign all the way.
    const sb::detail::Leaf* f3 = back.data.find("n.f3");
    REQUIRE(f3);
    CHECK(f3->type == SB_VALUE_FLOAT);
    CHECK(std::signbit(f3->f));
}

// ---------------------------------------------------------------------------
// Benchmark (hidden: run with `json_record_test [.bench]`)

namespace {

// A typical record line of about 1 KiB: a web chat with three turns.
std::string typical_line() {
    return R"({"meta":{"channel":"web_chat","occurred_at":"2025-01-06T09:44:05Z","external_id":"lb-7f3c2a91-0c4e-4b1a-9d2e","subject_ref":"cust-88213"},)"
           R"("fields":{"citizen":{"name":"Jane Example","email":"jane.example@example.org","phone":"+44 7700 900123",)"
           R"("address":{"line1":"12 Example Street","town":"Exampleton","postcode":"EX1 2MP"}},)"
           R"("query":{"service":"council_tax","topic":"Single person discount","reference":"CT-2025-004512"},)"
           R"("content":{"turns":[{"from":"citizen","at":"2025-01-06T09:44:05Z","text":"Hello, my partner moved out last month. Can I get the single person discount?"},)"
           R"({"from":"bot","at":"2025-01-06T09:44:07Z","text":"I can help with council tax discounts. What is your account reference?"},)"
           R"({"from":"citizen","at":"2025-01-06T09:44:40Z","text":"It is CT-2025-004512 \u2014 thanks"}]},)"
           R"("bot":{"id":1842,"score":0.92,"handover":false}},)"
           R"("categories":{"citizen.name":"identity.name","citizen.email":"contact.email","citizen.phone":"contact.phone",)"
           R"("citizen.address.*":"location.address","content.turns[*].text":"content.free_text","*":"operational"}})";
}

template <class F>
double best_ns(F&& f, int iterations) {
    double best = 1e300;
    for (int round = 0; round < 9; ++round) {
        auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < iterations; ++k) f();
        auto t1 = std::chrono::steady_clock::now();
        best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / iterations);
    }
    return best;
}

struct NullSink final : sb::detail::RecordSink {
    std::size_t n = 0;
    sb_status set_meta(const char*, const char*) override { return SB_OK; }
    sb_status set_field(const char*, const sb_value&, const char*) override {
        ++n;
        return SB_OK;
    }
    sb_status add_attachment(const sb_attachment&) override { return SB_OK; }
};

} // namespace

TEST_CASE("bench: a typical 1 KiB record line", "[.bench]") {
    const std::string line = typical_line();
    JsonRecordReader r;
    std::size_t leaves = 0;
    auto leaf = [&](std::string_view, const sb_value&) {
        ++leaves;
        return true;
    };
    REQUIRE(r.parse(line, leaf));
    const std::size_t per_line = leaves;
    double parse_ns = best_ns([&] { r.parse(line, leaf); }, 20000);

    NullSink sink;
    REQUIRE(r.read_record(line, sink));
    double record_ns = best_ns([&] { r.read_record(line, sink); }, 20000);

    double data_ns = best_ns(
        [&] {
            sb_record rec;
            sb::detail::DataRecordSink s(rec);
            r.read_record(line, s);
        },
        2000);

    std::printf("json_record bench: %zu-byte line, %zu leaves\n"
                "  leaves only (parse):                 %7.0f ns/line\n"
                "  record format, categories, no store: %7.0f ns/line\n"
                "  record format into sb_record (core): %7.0f ns/line\n",
                line.size(), per_line, parse_ns, record_ns, data_ns);
    CHECK(line.size() >= 900);
    CHECK(line.size() <= 1200);
}
