#include "store/codec.hpp"

#include <cstring>
#include <memory>

namespace switchboard::store {

// Record body, after its length (varint):
//
//   u8 version
//   varint meta mask (bit i: kMetaKeys[i] present), then those values (strings)
//   varint leaf count, then
//     version 1, per leaf (in path order): string path, string category,
//                u8 type, value
//     version 2, per leaf: head, u8 type, value
//     version 3: string heads (every leaf's head, in path order), then per
//                leaf: u8 type, value
//   head: varint bytes of the path shared with the previous leaf's, string
//         rest of the path, varint category (0: a new one, as a string,
//         that later leaves of the record can name by its number, 1-based)
//   value: string | zigzag varint (int, bool) | 8 bytes (float) | nothing (null)
//   varint attachment count, then per attachment: strings name, uri,
//     media_type, sha256, category, zigzag varint size
//
//   version 4 (in a chunk of format 2, below): varint heads, right after the
//     meta mask, then the meta values as above, the leaf count, and per leaf
//     u8 type, value: its heads are the chunk's table entry of that number.
//
// A chunk's body is its records one after another (format 1), or (format
// 2) u8 0, varint n, n strings of heads (each as version 3 writes them),
// then the records. A record never starts with 0 (its length), so the
// first byte tells them apart. The journal writes format 2 with version 4
// records: a shape's heads (about a third of a record on the benchmark's
// job) are written once per chunk, not once per record.
//
// Version 3 is what encode() writes. Its heads depend only on the leaves' paths
// and categories, so records of one shape have the same heads, byte for
// byte: a reader keeps the atoms of the last heads it met (this thread's
// memo, checked by comparing the bytes) and neither parses nor looks up a
// path again for the next record of that shape, and gives the records it
// reads a shape id (RecordData::shape_id) for the memos that key on one.
// Version 2 (the same heads, each before its leaf's value) and version 1
// (whole paths and categories) are still read.

namespace {
constexpr std::uint8_t kVersion1 = 1;
constexpr std::uint8_t kVersion2 = 2;
constexpr std::uint8_t kVersion = 3;
constexpr std::uint8_t kVersion4 = 4;
constexpr int kMeta = static_cast<int>(std::size(sb::detail::kMetaKeys));
constexpr std::size_t kMaxCategories = 1 << 16; // per record, in the encoder's table

std::uint64_t zigzag(std::int64_t v) {
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
std::int64_t unzigzag(std::uint64_t v) {
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}

std::size_t varint_size(std::uint64_t v) {
    std::size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

// Writes what version 2 keeps of each leaf before its type: the bytes of
// the path shared with the previous leaf's, the rest of it, the category.
// It depends only on the leaves' paths and categories, in order.
class HeadEncoder {
public:
    void put(const sb::detail::Leaf& l, std::string& out) {
        std::string_view path = l.path();
        std::size_t shared = 0;
        std::size_t n = std::min(path.size(), prev_.size());
        while (shared < n && path[shared] == prev_[shared]) ++shared;
        put_varint(out, shared);
        put_string(out, path.substr(shared));
        prev_ = path;
        std::size_t ref = 0;
        const sb::detail::CategoryAtom* cat = l.category_atom();
        for (std::size_t k = 0; k < ncats_; ++k)
            if (cats_[k] == cat || ((!cat->interned || !cats_[k]->interned) && cats_[k]->name == cat->name)) {
                ref = k + 1;
                break;
            }
        put_varint(out, ref);
        if (ref == 0) {
            put_string(out, l.category());
            if (ncats_ < std::size(cats_)) cats_[ncats_++] = cat; // else: written in full again
        }
    }

private:
    std::string_view prev_;
    // Categories seen so far, by first appearance (a record has a handful).
    // Interned atoms are one per name: their pointers tell them apart; a
    // record's own (not interned) atom is compared by name.
    const sb::detail::CategoryAtom* cats_[64];
    std::size_t ncats_ = 0;
};

// Appends the heads of `leaves`, in order (version 3's block).
void put_heads(const std::vector<sb::detail::Leaf>& leaves, std::string& out) {
    HeadEncoder e;
    for (const auto& l : leaves) e.put(l, out);
}

// The heads of a record of a shape (RecordData::shape_id), from this
// thread's memo of the last shapes met (most records of a source share a
// few).
struct Heads {
    std::uint64_t shape = 0;
    std::size_t leaves = 0;
    // Shared with the records encoded from it (PreEncoded) until their
    // chunk is written: a new shape takes a new string.
    std::shared_ptr<const std::string> heads;
};
const Heads* heads_of_shape(const sb::detail::RecordData& r) {
    const std::uint64_t shape = r.shape_id();
    if (shape == 0) return nullptr;
    Heads& h = sb::detail::thread_memo_slot<Heads, 4>(shape);
    const auto& leaves = r.leaves();
    if (h.shape != shape || h.leaves != leaves.size() || !h.heads) {
        h.shape = shape;
        h.leaves = leaves.size();
        auto heads = std::make_shared<std::string>();
        put_heads(leaves, *heads);
        h.heads = std::move(heads);
    }
    return &h;
}

// Appends everything after the meta values: leaves and attachments.
// With `shared` (version 4), a shape's heads are not written but given
// there, and null when the record has no shape (then written: version 3).
void encode_rest(const sb::detail::RecordData& r, std::string& body,
                 std::shared_ptr<const std::string>* shared = nullptr) {
    const auto& leaves = r.leaves();
    put_varint(body, leaves.size());
    if (const Heads* memo = heads_of_shape(r)) {
        if (shared)
            *shared = memo->heads;
        else
            put_string(body, *memo->heads);
    } else {
        if (shared) shared->reset();
        std::string heads;
        put_heads(leaves, heads);
        put_string(body, heads);
    }
    for (const auto& l : leaves) {
        body.push_back(static_cast<char>(l.type));
        switch (l.type) {
        case SB_VALUE_STRING: put_string(body, l.str); break;
        case SB_VALUE_INT:
        case SB_VALUE_BOOL: put_varint(body, zigzag(l.i)); break;
        case SB_VALUE_FLOAT: {
            char b[8];
            std::memcpy(b, &l.f, 8);
            body.append(b, 8);
            break;
        }
        default: break;
        }
    }
    put_varint(body, r.attachments().size());
    for (const auto& a : r.attachments()) {
        put_string(body, a.name);
        put_string(body, a.uri);
        put_string(body, a.media_type);
        put_string(body, a.sha256);
        put_string(body, a.category);
        put_varint(body, zigzag(a.size));
    }
}

std::size_t rest_size_hint(const sb::detail::RecordData& r) {
    std::size_t n = 16;
    for (const auto& l : r.leaves()) n += l.str.size() + 12;
    return n;
}
} // namespace

void put_varint_long(std::string& out, std::uint64_t v) {
    // Byte by byte into the string: bytes stored one at a time into a small
    // buffer and then copied with a wider load stalled that load until the
    // stores had reached the cache (store forwarding fails).
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

bool get_varint(std::string_view in, std::size_t& pos, std::uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (pos >= in.size()) return false;
        auto b = static_cast<std::uint8_t>(in[pos++]);
        v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

bool get_string(std::string_view in, std::size_t& pos, std::string_view& s) {
    std::uint64_t n;
    if (!get_varint(in, pos, n) || n > in.size() - pos) return false;
    s = in.substr(pos, n);
    pos += n;
    return true;
}

void encode(const sb_record& record, std::string& out) {
    const sb::detail::RecordData& r = record.data;
    // The body is written in place after room for its length, then moved
    // back if the length needs fewer bytes than reserved.
    constexpr std::size_t kRoom = 5; // bodies up to 32 GiB
    const std::size_t start = out.size();
    out.reserve(start + kRoom + rest_size_hint(r) + 256);
    out.append(kRoom, '\0');
    out.push_back(static_cast<char>(kVersion));
    std::uint64_t mask = 0;
    for (int i = 0; i < kMeta; ++i)
        if (r.meta_at(i)) mask |= 1u << i;
    put_varint(out, mask);
    for (int i = 0; i < kMeta; ++i)
        if (const std::string* v = r.meta_at(i)) put_string(out, *v);
    encode_rest(r, out);
    const std::size_t len = out.size() - start - kRoom;
    char head[10];
    std::size_t hn = 0;
    for (std::uint64_t v = len; ; v >>= 7) {
        head[hn++] = static_cast<char>((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    if (hn < kRoom)
        out.erase(start, kRoom - hn);
    else if (hn > kRoom)
        out.insert(start, hn - kRoom, '\0');
    std::memcpy(out.data() + start, head, hn);
}

void PreEncoded::assign(const sb_record& record) {
    const sb::detail::RecordData& r = record.data;
    tail_.clear();
    tail_.reserve(rest_size_hint(r) + 192);
    mask_ = 1; // the id
    for (int i = 1; i < kMeta; ++i)
        if (const std::string* v = r.meta_at(i)) {
            mask_ |= 1u << i;
            put_string(tail_, *v);
        }
    split_ = tail_.size() + varint_size(r.leaves().size()); // after the leaf count
    encode_rest(r, tail_, &heads_);
}

void PreEncoded::append_head(std::string_view id, std::uint64_t heads_index, std::string& out) const {
    if (!heads_) { // version 3: the heads are in the tail
        std::size_t len = 1 + varint_size(mask_) + varint_size(id.size()) + id.size() + tail_.size();
        put_varint(out, len);
        out.push_back(static_cast<char>(kVersion));
        put_varint(out, mask_);
        put_string(out, id);
        return;
    }
    std::size_t len = 1 + varint_size(mask_) + varint_size(heads_index) + varint_size(id.size()) + id.size() +
                      tail_.size();
    put_varint(out, len);
    out.push_back(static_cast<char>(kVersion4));
    put_varint(out, mask_);
    put_varint(out, heads_index);
    put_string(out, id);
}

void PreEncoded::append(std::string_view id, std::string& out) const {
    if (!heads_) {
        append_head(id, 0, out);
        out.append(tail_);
        return;
    }
    // Version 3, as encode() writes it: the heads after the leaf count.
    const std::size_t len = 1 + varint_size(mask_) + varint_size(id.size()) + id.size() + tail_.size() +
                            varint_size(heads_->size()) + heads_->size();
    put_varint(out, len);
    out.push_back(static_cast<char>(kVersion));
    put_varint(out, mask_);
    put_string(out, id);
    out.append(tail_, 0, split_);
    put_string(out, *heads_);
    out.append(tail_, split_);
}

void put_chunk_heads(const std::vector<std::string_view>& heads, std::string& out) {
    if (heads.empty()) return; // format 1
    out.push_back('\0');
    put_varint(out, heads.size());
    for (std::string_view h : heads) put_string(out, h);
}

bool ChunkHeads::read(std::string_view body) {
    heads.clear();
    first = 0;
    if (body.empty() || body[0] != '\0') return true; // format 1: no table
    std::size_t p = 1;
    std::uint64_t n;
    if (!get_varint(body, p, n) || n > body.size()) return false;
    heads.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t k = 0; k < n; ++k) {
        std::string_view h;
        if (!get_string(body, p, h)) return false;
        heads.push_back(h);
    }
    first = p;
    return true;
}

bool skip(std::string_view in, std::size_t& pos) {
    std::string_view body;
    return get_string(in, pos, body);
}

namespace {
using sb::detail::CategoryAtom;
using sb::detail::PathAtom;

// Reads one head (versions 2 and 3) at `p`: the leaf's path, made from the
// previous leaf's (`prev`, then this one's), and its category, from the
// record's table of them (`cats`). The atoms are interned, or owned by `r`.
bool read_head(std::string_view in, std::size_t& p, sb::detail::RecordData& r, std::string& prev,
               std::string& scratch, std::vector<const CategoryAtom*>& cats, const PathAtom*& path,
               const CategoryAtom*& category) {
    std::uint64_t shared, ref;
    std::string_view rest;
    if (!get_varint(in, p, shared) || shared > prev.size() || !get_string(in, p, rest) || !get_varint(in, p, ref))
        return false;
    scratch.assign(prev, 0, shared);
    scratch.append(rest);
    path = r.path_atom(scratch);
    scratch.swap(prev);
    if (!path) return false; // not a path: not what encode() writes
    if (ref == 0) {
        std::string_view cat;
        if (!get_string(in, p, cat)) return false;
        category = r.category_atom(cat);
        if (cats.size() < kMaxCategories) cats.push_back(category);
    } else {
        if (ref > cats.size()) return false;
        category = cats[ref - 1];
    }
    return true;
}

// The atoms of a version-3 record's heads, per leaf.
struct HeadAtoms {
    std::string heads; // the bytes they were read from
    std::vector<const PathAtom*> paths;
    std::vector<const CategoryAtom*> categories;
    std::uint64_t shape = 0;  // of records read whole; 0: not remembered
    std::vector<char> kept;   // the leaves the last filter used with them kept
    std::uint64_t kept_shape = 0; // of records read through that filter
};

// The atoms of `heads` (`n` leaves) for record `r`: from this thread's memo
// when it read the same bytes last (records of one shape), else read, and
// remembered when every atom is interned (and so outlives `r`); in `local`
// otherwise. Null when the heads are malformed.
HeadAtoms* atoms_of_heads(std::string_view heads, std::uint64_t n, sb::detail::RecordData& r, HeadAtoms& local) {
    HeadAtoms& memo = sb::detail::thread_memo_slot<HeadAtoms, 4>(std::hash<std::string_view>{}(heads));
    if (memo.shape != 0 && memo.paths.size() == n && memo.heads == heads) return &memo;
    std::string prev, scratch;
    std::vector<const CategoryAtom*> cats;
    std::size_t p = 0;
    bool interned = true;
    local.paths.reserve(n);
    local.categories.reserve(n);
    for (std::uint64_t k = 0; k < n; ++k) {
        const PathAtom* path = nullptr;
        const CategoryAtom* category = nullptr;
        if (!read_head(heads, p, r, prev, scratch, cats, path, category)) return nullptr;
        local.paths.push_back(path);
        local.categories.push_back(category);
        interned = interned && path->interned && category->interned;
    }
    if (p != heads.size()) return nullptr;
    if (!interned) return &local;
    memo.heads.assign(heads);
    memo.paths.swap(local.paths);
    memo.categories.swap(local.categories);
    memo.shape = sb::detail::new_shape_id();
    memo.kept.clear();
    memo.kept_shape = 0;
    return &memo;
}

// Reads a leaf's type and value at `p` into `l`; a string is copied only
// with `keep`.
bool read_value(std::string_view in, std::size_t& p, sb::detail::Leaf& l, bool keep) {
    if (p >= in.size()) return false;
    const auto type = static_cast<std::uint8_t>(in[p++]);
    if (type > SB_VALUE_BOOL) return false;
    l.type = static_cast<sb_value_type>(type);
    std::uint64_t u;
    switch (l.type) {
    case SB_VALUE_STRING: {
        std::string_view v;
        if (!get_string(in, p, v)) return false;
        if (keep) l.str.assign(v);
        return true;
    }
    case SB_VALUE_INT:
    case SB_VALUE_BOOL:
        if (!get_varint(in, p, u)) return false;
        l.i = unzigzag(u);
        return true;
    case SB_VALUE_FLOAT:
        if (in.size() - p < 8) return false;
        std::memcpy(&l.f, in.data() + p, 8);
        p += 8;
        return true;
    default: return true;
    }
}
} // namespace

bool decode(std::string_view in, std::size_t& pos, sb_record& record, const LeafFilter* keep,
            const ChunkHeads* table) {
    std::string_view body;
    if (!get_string(in, pos, body)) return false;
    if (body.empty()) return false;
    const auto version = static_cast<std::uint8_t>(body[0]);
    if (version != kVersion1 && version != kVersion2 && version != kVersion && version != kVersion4) return false;
    std::size_t p = 1;
    sb::detail::RecordData& r = record.data;
    r = sb::detail::RecordData();
    std::uint64_t mask;
    if (!get_varint(body, p, mask)) return false;
    std::string_view table_heads; // version 4's, from the chunk's table
    if (version == kVersion4) {
        std::uint64_t k;
        if (!table || !get_varint(body, p, k) || k >= table->heads.size()) return false;
        table_heads = table->heads[static_cast<std::size_t>(k)];
    }
    for (int i = 0; i < kMeta; ++i) {
        if (!(mask & (1u << i))) continue;
        std::string_view v;
        if (!get_string(body, p, v)) return false;
        r.set_meta_at(i, v);
    }
    std::uint64_t n;
    if (!get_varint(body, p, n) || n > body.size()) return false;
    sb::detail::Leaf skipped;
    auto wanted = [&](const PathAtom* path) { return !keep || keep->keep(keep->context, path); };
    std::uint64_t shape = 0;
    if (version == kVersion || version == kVersion4) {
        std::string_view heads = table_heads;
        if (version == kVersion && !get_string(body, p, heads)) return false;
        HeadAtoms local;
        HeadAtoms* atoms = atoms_of_heads(heads, n, r, local);
        if (!atoms) return false;
        static thread_local std::vector<char> kept;
        kept.assign(n, 1);
        std::size_t count = n;
        if (keep) {
            count = 0;
            for (std::uint64_t k = 0; k < n; ++k) count += (kept[k] = wanted(atoms->paths[k]) ? 1 : 0);
        }
        // Records read from the same heads through the same choice of
        // leaves have the same paths and categories: one shape.
        if (atoms->shape != 0 && keep && atoms->kept != kept) {
            atoms->kept = kept;
            atoms->kept_shape = sb::detail::new_shape_id();
        }
        if (atoms->shape != 0) shape = keep ? atoms->kept_shape : atoms->shape;
        r.reserve_leaves(count);
        for (std::uint64_t k = 0; k < n; ++k) {
            const bool take = kept[k] != 0;
            sb::detail::Leaf& l = take ? r.push_sorted(atoms->paths[k], atoms->categories[k]) : skipped;
            if (!read_value(body, p, l, take)) return false;
        }
    } else {
        r.reserve_leaves(static_cast<std::size_t>(n));
        // The path as written (shared bytes + rest), and the previous one's.
        std::string prev, scratch;
        std::vector<const CategoryAtom*> cats;
        for (std::uint64_t k = 0; k < n; ++k) {
            const PathAtom* path = nullptr;
            const CategoryAtom* category = nullptr;
            if (version == kVersion1) {
                std::string_view v1_path, cat;
                if (!get_string(body, p, v1_path) || !get_string(body, p, cat)) return false;
                path = r.path_atom(v1_path);
                category = r.category_atom(cat);
                if (!path) return false;
            } else if (!read_head(body, p, r, prev, scratch, cats, path, category)) {
                return false;
            }
            const bool take = wanted(path);
            if (!read_value(body, p, take ? r.push_sorted(path, category) : skipped, take)) return false;
        }
    }
    if (!get_varint(body, p, n) || n > body.size()) return false;
    for (std::uint64_t k = 0; k < n; ++k) {
        sb::detail::AttachmentData a;
        std::string_view name, uri, media, sha, cat;
        std::uint64_t size;
        if (!get_string(body, p, name) || !get_string(body, p, uri) ||
            !get_string(body, p, media) || !get_string(body, p, sha) ||
            !get_string(body, p, cat) || !get_varint(body, p, size))
            return false;
        a.name = std::string(name);
        a.uri = std::string(uri);
        a.media_type = std::string(media);
        a.sha256 = std::string(sha);
        a.category = std::string(cat);
        a.size = unzigzag(size);
        r.push_attachment(std::move(a));
    }
    if (p != body.size()) return false;
    if (shape != 0) r.assume_shape(shape);
    return true;
}

} // namespace switchboard::store
