#include "store/codec.hpp"

#include <cstring>

namespace switchboard::store {

namespace {
constexpr std::uint8_t kVersion = 1;

std::uint64_t zigzag(std::int64_t v) {
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}
std::int64_t unzigzag(std::uint64_t v) {
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}
} // namespace

void put_varint(std::string& out, std::uint64_t v) {
    char buf[10];
    int n = 0;
    while (v >= 0x80) {
        buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    buf[n++] = static_cast<char>(v);
    out.append(buf, static_cast<std::size_t>(n));
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

void put_string(std::string& out, std::string_view s) {
    put_varint(out, s.size());
    out.append(s);
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
    std::string body;
    body.reserve(256);
    body.push_back(static_cast<char>(kVersion));
    std::uint64_t mask = 0;
    constexpr int kMeta = static_cast<int>(std::size(sb::detail::kMetaKeys));
    for (int i = 0; i < kMeta; ++i)
        if (r.meta_at(i)) mask |= 1u << i;
    put_varint(body, mask);
    for (int i = 0; i < kMeta; ++i)
        if (const std::string* v = r.meta_at(i)) put_string(body, *v);
    put_varint(body, r.leaves().size());
    for (const auto& l : r.leaves()) {
        put_string(body, l.path);
        put_string(body, l.category);
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
    put_varint(out, body.size());
    out += body;
}

bool skip(std::string_view in, std::size_t& pos) {
    std::string_view body;
    return get_string(in, pos, body);
}

bool decode(std::string_view in, std::size_t& pos, sb_record& record) {
    std::string_view body;
    if (!get_string(in, pos, body)) return false;
    std::size_t p = 0;
    if (body.empty() || static_cast<std::uint8_t>(body[0]) != kVersion) return false;
    p = 1;
    sb::detail::RecordData& r = record.data;
    r = sb::detail::RecordData();
    std::uint64_t mask;
    if (!get_varint(body, p, mask)) return false;
    constexpr int kMeta = static_cast<int>(std::size(sb::detail::kMetaKeys));
    for (int i = 0; i < kMeta; ++i) {
        if (!(mask & (1u << i))) continue;
        std::string_view v;
        if (!get_string(body, p, v)) return false;
        r.set_meta_at(i, std::string(v));
    }
    std::uint64_t n;
    if (!get_varint(body, p, n) || n > body.size()) return false;
    for (std::uint64_t k = 0; k < n; ++k) {
        sb::detail::Leaf l;
        std::string_view path, cat;
        if (!get_string(body, p, path) || !get_string(body, p, cat) || p >= body.size())
            return false;
        l.path = std::string(path);
        l.category = std::string(cat);
        auto type = static_cast<std::uint8_t>(body[p++]);
        if (type > SB_VALUE_BOOL) return false;
        l.type = static_cast<sb_value_type>(type);
        std::uint64_t u;
        switch (l.type) {
        case SB_VALUE_STRING: {
            std::string_view v;
            if (!get_string(body, p, v)) return false;
            l.str = std::string(v);
            break;
        }
        case SB_VALUE_INT:
        case SB_VALUE_BOOL:
            if (!get_varint(body, p, u)) return false;
            l.i = unzigzag(u);
            break;
        case SB_VALUE_FLOAT:
            if (body.size() - p < 8) return false;
            std::memcpy(&l.f, body.data() + p, 8);
            p += 8;
            break;
        default: break;
        }
        r.push_sorted(std::move(l));
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
    return p == body.size();
}

} // namespace switchboard::store
