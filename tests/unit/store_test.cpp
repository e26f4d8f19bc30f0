// The journal store on a real SQLite file: the record codec, transactions,
// outbox progress, and that deleted values do not linger in the files.

#include "process.hpp"
#include "store/chunk_files.hpp"
#include "store/codec.hpp"
#include "store/store.hpp"

#include <catch2/catch.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <fstream>
#include <sstream>

using namespace switchboard;
using sbtest::TempDir;

namespace {

sb_record sample(int n) {
    sb_record r;
    sb_value name{SB_VALUE_STRING, "Canary-Name-", 12, 0, 0};
    std::string v = "Canary-Name-" + std::to_string(n);
    name.str = v.c_str();
    name.len = v.size();
    r.data.set("citizen.name", name, "identity.name");
    sb_value i{SB_VALUE_INT, nullptr, 0, -42 - n, 0};
    r.data.set("ref.n", i, "reference.internal");
    sb_value f{SB_VALUE_FLOAT, nullptr, 0, 0, 2.5};
    r.data.set("score", f, nullptr);
    sb_value b{SB_VALUE_BOOL, nullptr, 0, 1, 0};
    r.data.set("flags[3]", b, nullptr);
    sb_value nul{SB_VALUE_NULL, nullptr, 0, 0, 0};
    r.data.set("content.turns[1].text", nul, "content.free_text");
    r.data.set_meta("channel", "web_chat");
    r.data.set_meta("id", "R1-" + std::to_string(n));
    sb_attachment a{sizeof(sb_attachment), "recording", "file:///x.wav", "audio/wav", 2044, "ab", "media.voice"};
    r.data.add_attachment(a);
    return r;
}

std::string slurp_dir(const std::filesystem::path& dir) {
    std::string all;
    for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        std::ifstream in(e.path(), std::ios::binary);
        std::ostringstream s;
        s << in.rdbuf();
        all += s.str();
    }
    return all;
}

// The start of a hand-written record body of format `version`: the id as
// its only envelope value, then the leaf count.
std::string body_start(char version, std::string_view id, std::uint64_t leaves) {
    std::string body(1, version);
    store::put_varint(body, std::uint64_t{1} << sb::detail::meta_index("id"));
    store::put_string(body, id);
    store::put_varint(body, leaves);
    return body;
}

// Decodes `body`, length-prefixed as in a chunk, and checks it was read whole.
void decode_whole(const std::string& body, sb_record& r) {
    std::string buf;
    store::put_varint(buf, body.size());
    buf += body;
    std::size_t pos = 0;
    REQUIRE(store::decode(buf, pos, r));
    CHECK(pos == buf.size());
}

} // namespace

TEST_CASE("codec: varints round-trip at every length, one byte per seven bits") {
    const std::vector<std::pair<std::uint64_t, std::size_t>> cases = {
        {0, 1}, {1, 1}, {127, 1}, {128, 2}, {300, 2}, {16383, 2}, {16384, 3}, {(1ull << 21) - 1, 3},
        {1ull << 32, 5}, {1ull << 63, 10}, {~0ull, 10}};
    std::string all;
    for (const auto& [v, bytes] : cases) {
        INFO(v);
        std::string one = "x"; // after other bytes, as in a record
        store::put_varint(one, v);
        CHECK(one.size() == 1 + bytes);
        std::size_t pos = 1;
        std::uint64_t back = 0;
        REQUIRE(store::get_varint(one, pos, back));
        CHECK(back == v);
        CHECK(pos == one.size());
        store::put_varint(all, v);
    }
    std::size_t pos = 0;
    for (const auto& [v, bytes] : cases) {
        std::uint64_t back = 0;
        REQUIRE(store::get_varint(all, pos, back));
        CHECK(back == v);
    }
    CHECK(pos == all.size());
}

TEST_CASE("codec: a record survives encode and decode exactly") {
    std::string buf;
    for (int n = 0; n < 3; ++n) {
        sb_record r = sample(n);
        store::encode(r, buf);
    }
    std::size_t pos = 0;
    for (int n = 0; n < 3; ++n) {
        sb_record back;
        REQUIRE(store::decode(buf, pos, back));
        CHECK(back.data.json() == sample(n).data.json());
        REQUIRE(back.data.leaves().size() == 5);
        CHECK(back.data.find("citizen.name")->category() == "identity.name");
        CHECK(back.data.find("score")->category() == "unknown");
    }
    CHECK(pos == buf.size());
}

TEST_CASE("codec: a filter reads only the leaves it keeps, and steps over the others exactly") {
    std::string buf;
    for (int n = 0; n < 3; ++n) store::encode(sample(n), buf);
    // Keeps the name and the null: the int, float and bool are stepped over.
    store::LeafFilter filter{[](const void*, const sb::detail::PathAtom* path) {
                                 return path->path == "citizen.name" || path->path == "content.turns[1].text";
                             },
                             nullptr};
    std::size_t pos = 0;
    for (int n = 0; n < 3; ++n) {
        sb_record back;
        REQUIRE(store::decode(buf, pos, back, &filter));
        sb_record want = sample(n);
        want.data.erase("ref");
        want.data.erase("score");
        want.data.erase("flags");
        CHECK(back.data.json() == want.data.json());
        CHECK(back.data.leaves().size() == 2);
        CHECK(back.data.attachments().size() == 1);
    }
    CHECK(pos == buf.size());
}

TEST_CASE("codec: many categories, long shared paths and the two-step encoding agree") {
    sb_record r;
    // More categories than the encoder's table holds: the rest are written in full.
    for (int k = 0; k < 100; ++k) {
        std::string v = "value-" + std::to_string(k);
        sb_value s{SB_VALUE_STRING, v.c_str(), v.size(), 0, 0};
        std::string path = "content.turns[" + std::to_string(99 - k) + "].text"; // out of order
        REQUIRE(r.data.set(path, s, ("cat." + std::to_string(k % 70)).c_str()) == SB_OK);
    }
    r.data.set_meta("channel", "web_chat");
    r.data.set_meta("id", "R7-1");
    std::string once;
    store::encode(r, once);
    std::size_t pos = 0;
    sb_record back;
    REQUIRE(store::decode(once, pos, back));
    CHECK(pos == once.size());
    CHECK(back.data.json() == r.data.json());
    for (const auto& leaf : r.data.leaves())
        CHECK(back.data.find(leaf.path())->category() == leaf.category());
    // PreEncoded + append(id) writes exactly what encode() writes.
    std::string two;
    store::PreEncoded(r).append("R7-1", two);
    CHECK(two == once);
    // One PreEncoded used again (a journal's prepared records, batch after
    // batch): the same bytes as a new one, in its old buffer.
    sb_record small;
    sb_value s{SB_VALUE_STRING, "x", 1, 0, 0};
    REQUIRE(small.data.set("a", s, "c") == SB_OK);
    store::PreEncoded reused(r);
    reused.assign(small);
    std::string a, b;
    reused.append("R1-0", a);
    store::PreEncoded(small).append("R1-0", b);
    CHECK(a == b);
    reused.assign(r);
    a.clear();
    reused.append("R7-1", a);
    CHECK(a == once);
    // clear(): forgets it, keeping its buffer up to the bound given.
    const std::size_t capacity = reused.capacity();
    reused.clear(1 << 20);
    CHECK(reused.tail().empty());
    CHECK(reused.capacity() == capacity);
    reused.assign(r);
    reused.clear(16);
    CHECK(reused.tail().empty());
    CHECK(reused.capacity() < capacity);
}

TEST_CASE("codec: a chunk of format 2 writes a shape's heads once; its records read back whole with its table") {
    // Records of two shapes, as a source sets them (set_shape), and one set
    // field by field (no shape: written whole, version 3).
    const char* p1[] = {"citizen.name", "citizen.address.postcode", "content.text"};
    const char* c1[] = {"identity.name", "contact.address", "content.free_text"};
    const char* p2[] = {"call.ani", "call.queue"};
    sb_shape* s1 = sb::detail::shape_new(p1, c1, 3);
    sb_shape* s2 = sb::detail::shape_new(p2, nullptr, 2);
    REQUIRE(s1);
    REQUIRE(s2);
    std::vector<sb_record> records(7);
    for (int n = 0; n < 7; ++n) {
        sb_record& r = records[static_cast<std::size_t>(n)];
        const std::string name = "Name " + std::to_string(n), text = "said " + std::to_string(n);
        if (n == 3) {
            sb_value v{SB_VALUE_STRING, name.data(), name.size(), 0, 0};
            REQUIRE(r.data.set("x.y", v, "misc") == SB_OK);
        } else if (n % 2 == 0) {
            const sb_value v[] = {{SB_VALUE_STRING, name.data(), name.size(), 0, 0},
                                  {SB_VALUE_STRING, "LS1 4AB", 7, 0, 0},
                                  {SB_VALUE_STRING, text.data(), text.size(), 0, 0}};
            REQUIRE(sb::detail::record_set_shape(&r, s1, v) == SB_OK);
        } else {
            const sb_value v[] = {{SB_VALUE_STRING, "07700900123", 11, 0, 0},
                                  {SB_VALUE_INT, nullptr, 0, n, 0}};
            REQUIRE(sb::detail::record_set_shape(&r, s2, v) == SB_OK);
        }
        r.data.set_meta("source", "verint");
    }
    sb::detail::shape_free(s1);
    sb::detail::shape_free(s2);
    // As the journal writes a chunk: each shape's heads in the table once,
    // each record's head naming its entry, then its tail.
    std::vector<store::PreEncoded> pre(records.size());
    std::vector<std::shared_ptr<const std::string>> table;
    std::string records_bytes;
    for (std::size_t k = 0; k < records.size(); ++k) {
        pre[k].assign(records[k]);
        std::uint64_t index = 0;
        if (const auto& h = pre[k].heads()) {
            auto at = std::find_if(table.begin(), table.end(), [&](const auto& t) { return *t == *h; });
            index = static_cast<std::uint64_t>(at - table.begin());
            if (at == table.end()) table.push_back(h);
        }
        pre[k].append_head("R5-" + std::to_string(k), index, records_bytes);
        records_bytes += pre[k].tail();
    }
    CHECK_FALSE(pre[3].heads()); // no shape
    REQUIRE(table.size() == 2);
    std::vector<std::string_view> views;
    for (const auto& h : table) views.emplace_back(*h);
    std::string body;
    store::put_chunk_heads(views, body);
    body += records_bytes;
    // Each shape's heads are in the body once.
    for (const auto& h : table) {
        std::size_t found = 0;
        for (auto at = body.find(*h); at != std::string::npos; at = body.find(*h, at + 1)) ++found;
        CHECK(found == 1);
    }
    store::ChunkHeads heads;
    REQUIRE(heads.read(body));
    CHECK(heads.heads.size() == 2);
    std::size_t pos = heads.first;
    for (std::size_t k = 0; k < records.size(); ++k) {
        INFO(k);
        sb_record back;
        REQUIRE(store::decode(body, pos, back, nullptr, &heads));
        records[k].data.set_meta("id", "R5-" + std::to_string(k));
        CHECK(back.data.json() == records[k].data.json());
        for (const auto& leaf : records[k].data.leaves())
            CHECK(back.data.find(leaf.path())->category() == leaf.category());
        // Self-contained, as encode() writes it (version 3), the same record.
        std::string once, two;
        store::encode(records[k], once);
        pre[k].append("R5-" + std::to_string(k), two);
        CHECK(two == once);
    }
    CHECK(pos == body.size());
    // A record of version 4 read without its chunk's table, or naming an
    // entry the table does not have: unreadable, not a crash.
    std::size_t at = heads.first;
    sb_record r;
    CHECK_FALSE(store::decode(body, at, r));
    store::ChunkHeads short_table = heads;
    short_table.heads.resize(1);
    at = heads.first;
    CHECK(store::decode(body, at, r, nullptr, &short_table)); // entry 0
    CHECK_FALSE(store::decode(body, at, r, nullptr, &short_table)); // entry 1
    // A table cut short, and a body of format 1 (no table).
    store::ChunkHeads bad;
    CHECK_FALSE(bad.read(std::string_view(body).substr(0, 5)));
    store::ChunkHeads none;
    CHECK(none.read(records_bytes));
    CHECK(none.heads.empty());
    CHECK(none.first == 0);
}

TEST_CASE("codec: categories the intern table had no room for are written once each, like the others") {
    // With the table full, a record owns its atoms: two leaves of one
    // category may point to two atoms of the same name. The encoding is
    // the same as with interned atoms (each name in full once, then
    // referred to).
    sb::detail::InternLimits full;
    full.paths = 0;
    full.path_bytes = 0;
    full.categories = 0;
    full.category_bytes = 0;
    sb::detail::set_intern_limits_for_testing(full);
    struct Restore {
        ~Restore() { sb::detail::set_intern_limits_for_testing(sb::detail::InternLimits{}); }
    } restore;
    sb_record owned;
    for (int k = 0; k < 3; ++k) {
        std::string v = "v" + std::to_string(k);
        sb_value s{SB_VALUE_STRING, v.c_str(), v.size(), 0, 0};
        REQUIRE(owned.data.set("zz-owned-path-" + std::to_string(k), s, "zz.another-owned-category") == SB_OK);
    }
    for (const auto& leaf : owned.data.leaves()) CHECK_FALSE(leaf.category_atom()->interned);
    std::string bytes;
    store::encode(owned, bytes);
    const std::string name = "zz.another-owned-category";
    std::size_t count = 0;
    for (std::size_t at = bytes.find(name); at != std::string::npos; at = bytes.find(name, at + 1)) ++count;
    CHECK(count == 1);
    std::size_t pos = 0;
    sb_record back;
    REQUIRE(store::decode(bytes, pos, back));
    for (const auto& leaf : owned.data.leaves()) CHECK(back.data.find(leaf.path())->category() == name);
}

TEST_CASE("codec: records written by the first format (version 1) are still read") {
    // length, version 1, meta mask (bit of "id"), id, 1 leaf: path, category,
    // type string, value; 0 attachments.
    std::string body = body_start('\x01', "R1-0", 1);
    store::put_string(body, "citizen.name");
    store::put_string(body, "identity.name");
    body.push_back(static_cast<char>(SB_VALUE_STRING));
    store::put_string(body, "Canary-Name-1");
    store::put_varint(body, 0);
    sb_record r;
    decode_whole(body, r);
    REQUIRE(r.data.find("citizen.name"));
    CHECK(r.data.find("citizen.name")->str == "Canary-Name-1");
    CHECK(r.data.find("citizen.name")->category() == "identity.name");
    CHECK(std::string(r.data.meta("id")) == "R1-0");
}

TEST_CASE("codec: records written by the second format (version 2: each head before its value) are still read") {
    // length, version 2, meta mask (bit of "id"), id, 3 leaves, each: bytes
    // shared with the previous path, the rest, category (0: new, named;
    // k: the k-th named), type, value; 0 attachments.
    std::string body = body_start('\x02', "R2-0", 3);
    auto head = [&](std::uint64_t shared, std::string_view rest, std::uint64_t ref, std::string_view cat) {
        store::put_varint(body, shared);
        store::put_string(body, rest);
        store::put_varint(body, ref);
        if (ref == 0) store::put_string(body, cat);
    };
    head(0, "citizen.name", 0, "identity.name");
    body.push_back(static_cast<char>(SB_VALUE_STRING));
    store::put_string(body, "Canary-Name-2");
    head(8, "nino", 0, "identifier.nino"); // "citizen." shared
    body.push_back(static_cast<char>(SB_VALUE_STRING));
    store::put_string(body, "QQ123456C");
    head(8, "title", 1, ""); // the first category again
    body.push_back(static_cast<char>(SB_VALUE_INT));
    store::put_varint(body, 14); // zigzag of 7
    store::put_varint(body, 0);
    sb_record r;
    decode_whole(body, r);
    REQUIRE(r.data.leaves().size() == 3);
    CHECK(r.data.find("citizen.name")->str == "Canary-Name-2");
    CHECK(r.data.find("citizen.nino")->category() == "identifier.nino");
    CHECK(r.data.find("citizen.title")->i == 7);
    CHECK(r.data.find("citizen.title")->category() == "identity.name");
    CHECK(r.data.shape_id() == 0); // (version 2 records are read one leaf at a time)
}

TEST_CASE("codec: records of one shape are read with one shape id, per choice of leaves") {
    std::string buf;
    for (int n = 0; n < 4; ++n) store::encode(sample(n), buf);
    sb_record other = sample(9);
    sb_value extra{SB_VALUE_STRING, "x", 1, 0, 0};
    REQUIRE(other.data.set("citizen.zzz", extra, "identity") == SB_OK);
    store::encode(other, buf);
    std::size_t pos = 0;
    std::vector<sb_record> whole(5);
    for (auto& r : whole) REQUIRE(store::decode(buf, pos, r));
    CHECK(pos == buf.size());
    const std::uint64_t shape = whole[0].data.shape_id();
    CHECK(shape != 0);
    for (int n = 1; n < 4; ++n) {
        CHECK(whole[n].data.shape_id() == shape);
        CHECK(whole[n].data.json() == sample(n).data.json()); // read from the remembered heads
    }
    CHECK(whole[4].data.shape_id() != 0);
    CHECK(whole[4].data.shape_id() != shape); // other paths: another shape
    CHECK(whole[4].data.json() == other.data.json());

    // Through a filter: another shape, the same for every record it reads.
    store::LeafFilter names{[](const void*, const sb::detail::PathAtom* path) {
                                return path->path.rfind("citizen.", 0) == 0;
                            },
                            nullptr};
    store::LeafFilter scores{[](const void*, const sb::detail::PathAtom* path) { return path->path == "score"; },
                             nullptr};
    pos = 0;
    sb_record a, b, c;
    REQUIRE(store::decode(buf, pos, a, &names));
    REQUIRE(store::decode(buf, pos, b, &names));
    REQUIRE(store::decode(buf, pos, c, &scores));
    CHECK(a.data.shape_id() != 0);
    CHECK(a.data.shape_id() != shape);
    CHECK(b.data.shape_id() == a.data.shape_id());
    CHECK(c.data.shape_id() != 0);
    CHECK(c.data.shape_id() != a.data.shape_id());
    REQUIRE(a.data.leaves().size() == 1);
    CHECK(a.data.leaves()[0].str == "Canary-Name-0");
    REQUIRE(c.data.leaves().size() == 1);
    CHECK(c.data.leaves()[0].f == 2.5);
}

TEST_CASE("codec: heads that do not match their record's leaves are refused, remembered or not") {
    // A record's encoding, with its leaf count changed: the heads it carries
    // name 5 leaves; read as 4 or 6 it must be refused, both before and
    // after the same heads were read (and remembered) from a good record.
    std::string good;
    store::encode(sample(1), good);
    // length, version, mask, id, channel ("web_chat", the last meta value),
    // then the leaf count.
    const std::size_t count_at = good.find("web_chat") + 8;
    REQUIRE(static_cast<unsigned char>(good[count_at]) == 5);
    for (char wrong : {'\x04', '\x06'}) {
        std::string bad = good;
        bad[count_at] = wrong;
        for (int round = 0; round < 2; ++round) {
            std::size_t pos = 0;
            sb_record r;
            CHECK_FALSE(store::decode(bad, pos, r));
            pos = 0;
            REQUIRE(store::decode(good, pos, r)); // now remembered
        }
    }
    // A head whose path is not a path.
    sb_record odd;
    sb_value v{SB_VALUE_STRING, "v", 1, 0, 0};
    REQUIRE(odd.data.set("abc", v, "identity") == SB_OK);
    std::string bytes;
    store::encode(odd, bytes);
    const std::size_t at = bytes.find("abc");
    REQUIRE(at != std::string::npos);
    bytes[at + 1] = '.'; // "a.c" is fine, so make it "a..": an empty segment
    bytes[at + 2] = '.';
    std::size_t pos = 0;
    sb_record r;
    CHECK_FALSE(store::decode(bytes, pos, r));
}

TEST_CASE("codec: truncated or corrupt input is refused, never read past the end") {
    std::string buf;
    store::encode(sample(1), buf);
    for (std::size_t cut = 0; cut < buf.size(); ++cut) {
        std::size_t pos = 0;
        sb_record r;
        CHECK_FALSE(store::decode(std::string_view(buf).substr(0, cut), pos, r));
    }
    std::string bad = buf;
    bad[2] = '\x7f'; // version byte (after a 1-byte length)
    std::size_t pos = 0;
    sb_record r;
    CHECK_FALSE(store::decode(bad, pos, r));
}

TEST_CASE("store: a new journal has 16 KiB pages, and reopening it keeps them") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    // The page size is bytes 16-17 of the file header, big-endian.
    auto page_size = [&] {
        std::string header = sbtest::read_file(file).substr(0, 100);
        REQUIRE(header.rfind("SQLite format 3", 0) == 0);
        return (static_cast<unsigned char>(header[16]) << 8) | static_cast<unsigned char>(header[17]);
    };
    { store::open_sqlite(file.string())->write([](store::Txn& t) { t.set_meta("k", "v"); }); }
    CHECK(page_size() == 16384);
    { CHECK(store::open_sqlite(file.string())->meta("k") == "v"); }
    CHECK(page_size() == 16384);
}

TEST_CASE("store: outbox rows are read up to a number of rows or of entries, whichever comes first") {
    TempDir dir;
    auto s = store::open_sqlite((dir.path / "journal.db").string());
    s->write([&](store::Txn& t) {
        for (std::uint64_t first : {1, 6, 11, 16}) { // four rows of five entries
            store::OutboxRow row;
            row.destination = "revs";
            row.first_seq = first;
            row.count = 5;
            row.chunk = 1;
            row.expires_at = 5000;
            row.indexes = std::string(20, '\0');
            row.payloads = "x";
            t.put_outbox(row);
        }
    });
    CHECK(s->outbox_after("revs", 0, 3).size() == 3);
    CHECK(s->outbox_after("revs", 0, 10).size() == 4);
    CHECK(s->outbox_after("revs", 0, 10, 5).size() == 1);
    CHECK(s->outbox_after("revs", 0, 10, 6).size() == 2); // a row is never cut
    CHECK(s->outbox_after("revs", 7, 10, 6).front().first_seq == 6);
    CHECK(s->outbox_after("revs", 7, 10, 6).size() == 2);
}

TEST_CASE("store: chunks, outbox progress, state, claims and meta commit and read back") {
    TempDir dir;
    auto s = store::open_sqlite((dir.path / "journal.db").string());
    std::int64_t id = 0;
    s->write([&](store::Txn& t) {
        id = t.next_chunk_id();
        std::string body;
        store::encode(sample(1), body);
        t.put_chunk({id, 1000, 5000, 1}, body);
        store::OutboxRow row;
        row.destination = "revs";
        row.first_seq = 1;
        row.count = 1;
        row.chunk = id;
        row.expires_at = 5000;
        row.indexes = std::string("\0\0\0\0", 4);
        row.payloads = body;
        t.put_outbox(row);
        CHECK(t.claim(77, 5000));
        CHECK_FALSE(t.claim(77, 5000));
        t.set_state("src", "cursor", std::string("file:42"));
    });
    CHECK(id == 1);
    CHECK(s->chunk_info(1)->expires_at == 5000);
    CHECK(s->state("src", "cursor") == "file:42");
    CHECK(s->last_seq("revs") == 1);
    CHECK(s->acked("revs") == 0);
    REQUIRE(s->outbox_after("revs", 0, 10).size() == 1);
    CHECK_FALSE(s->outbox_after("revs", 0, 10)[0].payloads.empty());
    s->write([&](store::Txn& t) { t.set_acked("revs", 1); });
    CHECK(s->acked("revs") == 1);
    CHECK(s->outbox_after("revs", 1, 10).empty());
    // Delivered rows keep which records they carried, not the copies.
    auto rows = s->outbox_for_chunk(1);
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].payloads.empty());
    CHECK(rows[0].indexes.size() == 4);
    // Chunk ids never repeat, even after deletion.
    s->write([&](store::Txn& t) {
        t.delete_chunk(1);
        CHECK(t.next_chunk_id() == 2);
    });
    CHECK(s->expired_chunks(10'000, 10).empty());
}

TEST_CASE("store: a transaction that throws leaves nothing behind") {
    TempDir dir;
    auto s = store::open_sqlite((dir.path / "journal.db").string());
    CHECK_THROWS(s->write([&](store::Txn& t) {
        t.set_state("src", "cursor", std::string("x"));
        throw std::runtime_error("fail half way");
    }));
    CHECK_FALSE(s->state("src", "cursor"));
}

TEST_CASE("store: expired chunks are found by index, oldest first, and limited") {
    TempDir dir;
    auto s = store::open_sqlite((dir.path / "journal.db").string());
    s->write([&](store::Txn& t) {
        for (int i = 0; i < 10; ++i) t.put_chunk({t.next_chunk_id(), 0, 1000 - i * 10, 1}, "x");
    });
    auto due = s->expired_chunks(960, 3);
    REQUIRE(due.size() == 3);
    CHECK(due[0].expires_at == 910);
    CHECK(due[2].expires_at == 930);
    CHECK(s->expired_chunks(100, 10).empty());
}

TEST_CASE("store: erase task items round-trip") {
    std::vector<store::EraseItem> items = {{"R1-0", "ext-1", "cust-9", "web_chat"}, {"R1-1", "", "", "phone"}};
    std::string blob;
    store::encode_items(items, blob);
    std::vector<store::EraseItem> back;
    REQUIRE(store::decode_items(blob, back));
    REQUIRE(back.size() == 2);
    CHECK(back[0].subject_ref == "cust-9");
    CHECK(back[1].channel == "phone");
    CHECK_FALSE(store::decode_items(blob.substr(0, blob.size() - 1), back));
}

TEST_CASE("store: after deletion and scrub, no byte of a deleted value remains in the files") {
    TempDir dir;
    {
        auto s = store::open_sqlite((dir.path / "journal.db").string());
        std::string body;
        for (int n = 0; n < 200; ++n) store::encode(sample(n), body); // several pages
        s->write([&](store::Txn& t) {
            t.put_chunk({t.next_chunk_id(), 0, 1000, 200}, body);
            store::QuarantineItem q;
            q.instance = "src";
            q.ref = "line 3";
            q.reason = "malformed";
            q.expires_at = 1000;
            q.bytes = "Canary-Quarantine-Bytes";
            t.put_quarantine(q);
        });
        s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 9000, 1}, "kept"); });
        REQUIRE(slurp_dir(dir.path).find("Canary-Name-17") != std::string::npos);
        s->write([&](store::Txn& t) {
            for (auto& c : s->expired_chunks(1000, 10)) t.delete_chunk(c.id);
            CHECK(t.expire_quarantine(1000) == 1);
        });
        s->scrub();
        std::string raw = slurp_dir(dir.path);
        CHECK(raw.find("Canary-Name-") == std::string::npos);
        CHECK(raw.find("Canary-Quarantine") == std::string::npos);
        CHECK(raw.find("kept") != std::string::npos);
    }
    CHECK(slurp_dir(dir.path).find("Canary-Name-") == std::string::npos);
}

// --- Chunk bodies in segment files (<journal>-chunks/) ---------------------

namespace {

std::string canary_body(int n, std::size_t size) {
    std::string body = "Canary-Body-" + std::to_string(n) + "-";
    while (body.size() < size) body += static_cast<char>('a' + body.size() % 26);
    return body;
}

std::vector<std::string> segment_files(const std::filesystem::path& journal) {
    std::vector<std::string> out;
    const auto dir = std::filesystem::path(journal.string() + "-chunks");
    if (!std::filesystem::exists(dir)) return out;
    for (auto& e : std::filesystem::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

// Runs SQL on the journal as another program would (the test's own
// connection), for what the store's interface cannot do: an old layout, a
// crash half way.
void raw_sql(const std::filesystem::path& journal, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(journal.c_str(), &db) == SQLITE_OK);
    char* err = nullptr;
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    INFO(msg);
    REQUIRE(rc == SQLITE_OK);
}

} // namespace

TEST_CASE("store: chunk bodies are in segment files, a new one past its size, and one with no chunk left is removed") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    auto s = store::open_sqlite(file.string(), 8192);
    std::vector<std::int64_t> ids;
    for (int n = 0; n < 6; ++n) // 3,000 bytes each: three to a segment of 8 KiB
        s->write([&](store::Txn& t) {
            ids.push_back(t.next_chunk_id());
            t.put_chunk({ids.back(), 0, 1000 + n, 1}, canary_body(n, 3000));
        });
    CHECK(segment_files(file) == std::vector<std::string>{"00000001.seg", "00000002.seg"});
    for (int n = 0; n < 6; ++n) CHECK(s->chunk_body(ids[n]) == canary_body(n, 3000));
    // Not in the database file, nor in its write-ahead log.
    s->scrub();
    CHECK(sbtest::read_file(file).find("Canary-Body-") == std::string::npos);

    // The first segment's chunks go: so does the file. The current one
    // stays even when it is empty, and is appended to.
    s->write([&](store::Txn& t) {
        for (int n = 0; n < 3; ++n) t.delete_chunk(ids[n]);
    });
    CHECK(segment_files(file) == std::vector<std::string>{"00000002.seg"});
    s->write([&](store::Txn& t) {
        for (int n = 3; n < 6; ++n) t.delete_chunk(ids[n]);
    });
    CHECK(segment_files(file) == std::vector<std::string>{"00000002.seg"});
    CHECK(slurp_dir(dir.path).find("Canary-Body-") == std::string::npos);
    s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 2000, 1}, canary_body(9, 100)); });
    CHECK(segment_files(file) == std::vector<std::string>{"00000003.seg"}); // 2 was full, and empty
    CHECK(s->chunk_body(ids.back() + 1) == canary_body(9, 100));
    CHECK_FALSE(s->chunk_body(ids[0]));
}

TEST_CASE("store: a replaced body leaves no byte of the old one, and a rolled back one none of its own") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    auto s = store::open_sqlite(file.string());
    std::int64_t id = 0;
    s->write([&](store::Txn& t) {
        id = t.next_chunk_id();
        t.put_chunk({id, 0, 1000, 1}, canary_body(1, 5000));
        t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "neighbour");
    });
    s->write([&](store::Txn& t) { t.replace_chunk_body(id, "the same chunk without the erased record"); });
    CHECK(s->chunk_body(id) == "the same chunk without the erased record");
    CHECK(s->chunk_body(id + 1) == "neighbour");
    CHECK(slurp_dir(dir.path).find("Canary-Body-1") == std::string::npos);

    CHECK_THROWS(s->write([&](store::Txn& t) {
        t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(2, 5000));
        throw std::runtime_error("fail half way");
    }));
    CHECK(slurp_dir(dir.path).find("Canary-Body-2") == std::string::npos);
    s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "after"); });
    CHECK(s->chunk_body(id + 1) == "neighbour");
    CHECK(s->chunk_body(id + 2) == "after"); // the id taken by the rollback, taken again
}

TEST_CASE("store: a deletion committed but not punched out (a crash between) is punched at the next write") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    {
        auto s = store::open_sqlite(file.string());
        s->write([&](store::Txn& t) {
            t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(1, 3000));
            t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "kept");
        });
    }
    // What the commit leaves when the process dies before punching.
    raw_sql(file, "BEGIN; INSERT INTO chunk_holes(seg, off, len) SELECT seg, off, len FROM chunks WHERE id=1; "
                  "DELETE FROM chunks WHERE id=1; COMMIT;");
    REQUIRE(slurp_dir(dir.path).find("Canary-Body-1") != std::string::npos);
    auto s = store::open_sqlite(file.string());
    s->write([&](store::Txn& t) { t.set_meta("k", "v"); });
    CHECK(slurp_dir(dir.path).find("Canary-Body-1") == std::string::npos);
    CHECK(s->chunk_body(2) == "kept");
}

TEST_CASE("store: a journal whose bodies are in its rows (the earlier layout) is read, and moves them out when they change") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    raw_sql(file, "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; "
                  "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                  "CREATE TABLE chunks(id INTEGER PRIMARY KEY, created_at INTEGER NOT NULL, "
                  "expires_at INTEGER NOT NULL, count INTEGER NOT NULL, body BLOB NOT NULL);"
                  "INSERT INTO chunks VALUES(1, 0, 1000, 1, CAST('Canary-Old-Layout' AS BLOB));"
                  "INSERT INTO chunks VALUES(2, 0, 1000, 1, CAST('old neighbour' AS BLOB));"
                  "INSERT INTO meta VALUES('next_chunk', '3');");
    auto s = store::open_sqlite(file.string());
    CHECK(s->chunk_body(1) == "Canary-Old-Layout");
    s->write([&](store::Txn& t) {
        t.replace_chunk_body(1, "replaced");
        t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "new layout");
    });
    CHECK(s->chunk_body(1) == "replaced");
    CHECK(s->chunk_body(2) == "old neighbour");
    CHECK(s->chunk_body(3) == "new layout");
    s->write([&](store::Txn& t) { t.delete_chunk(2); });
    s->scrub();
    const std::string raw = slurp_dir(dir.path);
    CHECK(raw.find("Canary-Old-Layout") == std::string::npos);
    CHECK(raw.find("old neighbour") == std::string::npos);
}

TEST_CASE("store: two handles on one journal (the daemon and a command) append after each other's bodies") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    auto a = store::open_sqlite(file.string());
    auto b = store::open_sqlite(file.string());
    for (int n = 0; n < 4; ++n) {
        auto& s = n % 2 ? b : a;
        s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(n, 700)); });
    }
    for (int n = 0; n < 4; ++n) {
        CHECK(a->chunk_body(n + 1) == canary_body(n, 700));
        CHECK(b->chunk_body(n + 1) == canary_body(n, 700));
    }
    b->write([&](store::Txn& t) { t.delete_chunk(2); });
    CHECK_FALSE(a->chunk_body(2));
    CHECK(a->chunk_body(3) == canary_body(2, 700));
}

TEST_CASE("store: a segment file cut short is an error that names it, not a short body") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    auto s = store::open_sqlite(file.string());
    s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(1, 4000)); });
    std::filesystem::resize_file(file.string() + "-chunks/00000001.seg", 1000);
    try {
        (void)s->chunk_body(1);
        FAIL("no error");
    } catch (const store::StoreError& e) {
        CHECK_THAT(e.what(), Catch::Contains("journal.db-chunks/00000001.seg") &&
                                 Catch::Contains("chunk 1 has 1000 of its 4000 bytes"));
    }
}

TEST_CASE("store: a body given in pieces (more than one system call takes) is stored as one") {
    TempDir dir;
    auto s = store::open_sqlite((dir.path / "journal.db").string());
    std::vector<std::string> parts;
    std::string whole;
    for (int k = 0; k < 3000; ++k) { // IOV_MAX is 1024
        parts.push_back(k % 7 == 0 ? std::string() : "piece-" + std::to_string(k) + ";");
        whole += parts.back();
    }
    std::vector<std::string_view> pieces(parts.begin(), parts.end());
    s->write([&](store::Txn& t) {
        t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "before");
        t.put_chunk({t.next_chunk_id(), 0, 1000, 3000}, pieces);
        t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "after");
    });
    CHECK(s->chunk_body(1) == "before");
    CHECK(s->chunk_body(2) == whole);
    CHECK(s->chunk_body(3) == "after");
    std::string into;
    CHECK(s->read_chunk_body(2, [&](std::size_t n) {
        into.assign(n, '\0');
        return into.data();
    }));
    CHECK(into == whole);
    CHECK_FALSE(s->read_chunk_body(4, [&](std::size_t) -> char* { FAIL("asked for memory"); return nullptr; }));
}

TEST_CASE("store: reading a backlog across many segments keeps a bounded number of files open") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    auto open_fds = [] {
        std::size_t n = 0;
        for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
        return n;
    };
    auto s = store::open_sqlite(file.string(), 100); // a segment per chunk
    const std::size_t before = open_fds();
    for (int n = 0; n < 60; ++n)
        s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(n, 200)); });
    REQUIRE(segment_files(file).size() == 60);
    for (int round = 0; round < 2; ++round)
        for (int n = 0; n < 60; ++n) CHECK(s->chunk_body(n + 1) == canary_body(n, 200));
    CHECK(open_fds() <= before + store::ChunkFiles::kMaxOpen);
}

TEST_CASE("store: segment files the journal does not name are removed when it is opened") {
    TempDir dir;
    const auto file = dir.path / "journal.db";
    {
        auto s = store::open_sqlite(file.string(), 4000);
        for (int n = 0; n < 3; ++n) // three segments
            s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(n, 5000)); });
        // A transaction that began a fourth and did not commit.
        CHECK_THROWS(s->write([&](store::Txn& t) {
            t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, canary_body(7, 5000));
            throw std::runtime_error("fail half way");
        }));
    }
    CHECK(segment_files(file).size() == 4);
    {
        auto s = store::open_sqlite(file.string(), 4000);
        CHECK(segment_files(file) == std::vector<std::string>{"00000001.seg", "00000002.seg", "00000003.seg"});
        CHECK(s->chunk_body(3) == canary_body(2, 5000));
    }
    // The database removed without its segments: they would never expire.
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(file.string() + suffix);
    {
        auto s = store::open_sqlite(file.string(), 4000);
        CHECK(segment_files(file).empty());
        CHECK(slurp_dir(dir.path).find("Canary-Body-") == std::string::npos);
        s->write([&](store::Txn& t) { t.put_chunk({t.next_chunk_id(), 0, 1000, 1}, "anew"); });
        CHECK(s->chunk_body(1) == "anew");
    }
}
