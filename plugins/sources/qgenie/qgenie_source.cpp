// qgenie: One Stop Shop visits from Q Genie queue management, read from a
// drop directory. MODELLED: Q Genie publishes no interface, so the nightly
// CSV export and the JSON visit record read here are Switchboard's model
// (vendors.md §3.3, fixtures/queue/qgenie_MODELLED_*). Every vendor column
// and key is named in mapping.hpp only.
//
// Exactly once across crashes: the read position in the current file (its
// identity, a byte offset for CSV or a visit index for JSON, the row and
// line numbers) is committed in the same durable commit as the visits read
// before it (emit_batch with the state key "cursor"). Finished files are
// remembered by identity (name, inode, size, mtime) in the state "done".
// Rows and files that cannot be used go to the quarantine with a reason
// naming their row (line) number; no value is ever logged.
#include "csv.hpp"
#include "london_time.hpp"
#include "mapping.hpp"

#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::size_t kQuarantineHead = 1u << 20; // bytes kept of an oversized file
constexpr int kLogsPerPoll = 20;                  // quarantine warnings per poll

std::string os_error() { return std::strerror(errno); }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
        char x = a[k], y = b[k];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        // Continuation bytes, and the smallest code point of that length.
        std::size_t n;
        std::uint32_t cp, least;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1F, least = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0F, least = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07, least = 0x10000;
        } else {
            return false;
        }
        if (i + n >= s.size()) return false;
        for (std::size_t k = 1; k <= n; ++k) {
            auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += n + 1;
    }
    return true;
}

void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// Windows-1252 (a common encoding of UK exports) to UTF-8. The five unused
// bytes become U+FFFD.
std::string from_cp1252(std::string_view in) {
    static constexpr std::uint16_t kHigh[32] = {
        0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178};
    std::string out;
    out.reserve(in.size() + in.size() / 8);
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (c < 0x80)
            out += ch;
        else if (c < 0xA0)
            append_utf8(out, kHigh[c - 0x80]);
        else
            append_utf8(out, c);
    }
    return out;
}

// A file's identity: a file replaced or rewritten is a new file.
struct FileId {
    std::string name;
    std::uint64_t ino = 0, size = 0;
    std::int64_t mtime_ns = 0;

    bool same(const FileId& o) const {
        return name == o.name && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
    }
    std::string text() const {
        return std::to_string(ino) + " " + std::to_string(size) + " " + std::to_string(mtime_ns) +
               " " + name;
    }
};

// Reads "n1 n2 ... nk rest" (the name last, so that it may hold spaces).
bool read_numbers(std::string_view& s, std::uint64_t* const* out, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
        std::size_t sp = s.find(' ');
        if (sp == std::string_view::npos) return false;
        auto r = std::from_chars(s.data(), s.data() + sp, *out[k]);
        if (r.ec != std::errc() || r.ptr != s.data() + sp) return false;
        s.remove_prefix(sp + 1);
    }
    return !s.empty();
}

// Where reading stands: committed with the records as the state "cursor".
// pos is a byte offset (CSV) or a visit index (JSON); pos == end means the
// file is finished.
struct Cursor {
    FileId file;
    std::uint64_t pos = 0, row = 0, line = 1;

    // "1 <ino> <size> <mtime_ns> <pos> <row> <line> <name>"
    std::string text() const {
        return "1 " + std::to_string(file.ino) + " " + std::to_string(file.size) + " " +
               std::to_string(file.mtime_ns) + " " + std::to_string(pos) + " " +
               std::to_string(row) + " " + std::to_string(line) + " " + file.name;
    }
    static std::optional<Cursor> parse(std::string_view s) {
        Cursor c;
        std::uint64_t version = 0, mtime = 0;
        std::uint64_t* fields[] = {&version, &c.file.ino, &c.file.size, &mtime,
                                   &c.pos,   &c.row,      &c.line};
        if (!read_numbers(s, fields, 7) || version != 1) return std::nullopt;
        c.file.mtime_ns = static_cast<std::int64_t>(mtime);
        c.file.name = std::string(s);
        return c;
    }
};

// One vendor value on its way to the record.
struct Item {
    std::string key;                  // CSV column name, or JSON path with [*]
    std::vector<std::uint32_t> index; // JSON array indexes along the path
    sb_value_type type = SB_VALUE_STRING;
    std::string str;
    std::int64_t i = 0;
    double f = 0;

    std::string text() const {
        switch (type) {
        case SB_VALUE_STRING: return str;
        case SB_VALUE_INT: return std::to_string(i);
        case SB_VALUE_BOOL: return i ? "true" : "false";
        case SB_VALUE_FLOAT: {
            std::string out;
            sb::detail::append_json_double(out, f);
            return out;
        }
        default: return {};
        }
    }
};

// "evidence[*].receipt" with its [*] replaced by the indexes, in order.
std::string place(std::string_view pattern, const std::vector<std::uint32_t>& index) {
    std::string out;
    std::size_t next = 0;
    for (std::size_t k = 0; k < pattern.size(); ++k) {
        if (pattern.substr(k, 3) == "[*]") {
            out += "[" + std::to_string(next < index.size() ? index[next] : 0) + "]";
            ++next;
            k += 2;
        } else {
            out += pattern[k];
        }
    }
    return out;
}

// "evidence_receipts[1].item" -> key "evidence_receipts[*].item", index {1}.
void generalise(std::string_view path, std::string& key, std::vector<std::uint32_t>& index) {
    key.clear();
    index.clear();
    for (std::size_t k = 0; k < path.size(); ++k) {
        if (path[k] == '[') {
            std::size_t close = path.find(']', k);
            std::uint32_t v = 0;
            std::from_chars(path.data() + k + 1, path.data() + close, v);
            index.push_back(v);
            key += "[*]";
            k = close;
        } else {
            key += path[k];
        }
    }
}

bool truthy(const Item& it, bool& out) {
    if (it.type == SB_VALUE_BOOL || it.type == SB_VALUE_INT) {
        out = it.i != 0;
        return it.type == SB_VALUE_BOOL || it.i == 0 || it.i == 1;
    }
    if (it.type != SB_VALUE_STRING) return false;
    std::string_view s = trim(it.str);
    for (const char* t : {"true", "yes", "y", "1"})
        if (iequals(s, t)) return out = true, true;
    for (const char* f : {"false", "no", "n", "0"})
        if (iequals(s, f)) return out = false, true;
    return false;
}

std::optional<std::string> build_visit_unguarded(qgenie::Format format,
                                                 const std::vector<Item>& items, sb::Record& rec,
                                                 std::set<std::string>& unmapped);

// Builds one visit's record from its items through kMapping. Returns the
// reason (naming keys and paths, never values) if the visit cannot be used.
std::optional<std::string> build_visit(qgenie::Format format, const std::vector<Item>& items,
                                       sb::Record& rec, std::set<std::string>& unmapped) {
    try {
        return build_visit_unguarded(format, items, rec, unmapped);
    } catch (const sb::Error& e) { // the record refused a field (its message names the path)
        return std::string(e.what());
    }
}

std::optional<std::string> build_visit_unguarded(qgenie::Format format,
                                                 const std::vector<Item>& items, sb::Record& rec,
                                                 std::set<std::string>& unmapped) {
    using qgenie::Transform;
    bool have_required[std::size(qgenie::kMapping)] = {};
    for (const Item& it : items) {
        bool known = false;
        for (std::size_t m = 0; m < std::size(qgenie::kMapping); ++m) {
            const qgenie::Mapping& map = qgenie::kMapping[m];
            if (map.format != format) continue;
            if (format == qgenie::Format::csv ? !iequals(map.key, trim(it.key)) : map.key != it.key)
                continue;
            known = true;
            if (map.transform == Transform::ignore || it.type == SB_VALUE_NULL) continue;
            std::string text = it.type == SB_VALUE_STRING ? std::string(it.str) : it.text();
            if (format == qgenie::Format::csv) text = std::string(trim(text));
            if (text.empty() && it.type == SB_VALUE_STRING) continue; // absent
            std::string what = format == qgenie::Format::csv ? "column " : "key ";
            what += map.key;
            std::string path = place(map.path, it.index);
            std::string meta_value;
            switch (map.transform) {
            case Transform::text:
                rec.set(path, text, map.category);
                meta_value = text;
                break;
            case Transform::london_time: {
                auto t = qgenie::parse_london(text);
                if (!t) {
                    if (sb::detail::parse_time(text)) { // already RFC 3339: kept
                        rec.set(path, text, map.category);
                        meta_value = text;
                        break;
                    }
                    return what + " is not a dd/mm/yyyy [HH:MM] time";
                }
                rec.set(path, qgenie::to_rfc3339(*t), map.category);
                meta_value = qgenie::to_rfc3339_instant(*t);
                break;
            }
            case Transform::rfc3339:
                if (it.type != SB_VALUE_STRING || !sb::detail::parse_time(text))
                    return what + " is not an RFC 3339 date-time";
                rec.set(path, text, map.category);
                meta_value = text;
                break;
            case Transform::boolean: {
                bool b = false;
                if (!truthy(it, b)) return what + " is not true or false";
                rec.set(path, b, map.category);
                break;
            }
            case Transform::list: {
                std::uint32_t n = 0;
                std::size_t start = 0;
                for (std::size_t k = 0; k <= text.size(); ++k) {
                    if (k < text.size() && text[k] != ';' && text[k] != '|') continue;
                    std::string_view part = trim(std::string_view(text).substr(start, k - start));
                    start = k + 1;
                    if (part.empty()) continue;
                    rec.set(place(map.path, {n++}), part, map.category);
                }
                break;
            }
            case Transform::ignore: break;
            }
            if (map.meta == qgenie::Meta::external_id && !meta_value.empty())
                rec.meta(SB_META_EXTERNAL_ID, meta_value);
            if (map.meta == qgenie::Meta::occurred_at && !meta_value.empty())
                rec.meta(SB_META_OCCURRED_AT, meta_value);
            if (map.required) have_required[m] = true;
        }
        if (!known) unmapped.insert(it.key);
    }
    for (std::size_t m = 0; m < std::size(qgenie::kMapping); ++m) {
        const qgenie::Mapping& map = qgenie::kMapping[m];
        if (map.format == format && map.required && !have_required[m])
            return std::string(format == qgenie::Format::csv ? "column " : "key ") +
                   std::string(map.key) + " is missing or empty";
    }
    rec.meta(SB_META_CHANNEL, qgenie::kChannel);
    return std::nullopt;
}

class QGenieSource : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "qgenie";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "One Stop Shop visits from Q Genie exports in a drop directory (MODELLED "
                        "format: CSV daily export and JSON visit records)";
        i.kind = SB_KIND_SOURCE;
        for (const char* c : qgenie::kCategories) i.data_categories.emplace_back(c);
        i.config = {
            sb::Field::path("dir").required().describe(
                "The drop directory the Q Genie export is written to"),
            sb::Field::string("pattern").multi().fallback("[\"*.csv\", \"*.json\"]").describe(
                "File names to read (shell globs; dot files never match: write aside, then "
                "rename)"),
            sb::Field::duration("settle").min(0).fallback("\"5s\"").describe(
                "A file is read only once it has not changed for this long"),
            sb::Field::integer("batch").range(1, 65536).fallback("256").describe(
                "Visits read per poll and committed together"),
            sb::Field::size("max_file").range(1024, 1024.0 * 1024 * 1024).fallback("\"64MiB\"")
                .describe("Largest file read; larger ones are quarantined (first 1 MiB) and skipped"),
            sb::Field::string("encoding").choices({"utf-8", "windows-1252"}).fallback("\"utf-8\"")
                .describe("Character encoding of CSV exports (a file with a UTF-8 byte order "
                          "mark is always UTF-8)"),
            sb::Field::boolean("delete_processed").fallback("false").describe(
                "Delete an export file once every visit in it is committed or quarantined"),
        };
        return i;
    }

    explicit QGenieSource(sb::Host host)
        : sb::Plugin(host),
          dir_(host.string("dir")),
          patterns_(host.list("pattern")),
          settle_ms_(host.duration_ms("settle")),
          batch_(static_cast<std::size_t>(host.integer("batch"))),
          max_file_(static_cast<std::uint64_t>(host.integer("max_file"))),
          cp1252_(host.string("encoding") == "windows-1252"),
          delete_processed_(host.boolean("delete_processed")) {
        if (patterns_.empty()) throw sb::Error(SB_ERR_INVALID, "config key 'pattern' is empty");
        for (const auto& p : patterns_)
            if (p.empty() || p.find('/') != std::string::npos)
                throw sb::Error(SB_ERR_INVALID,
                                "config key 'pattern': each entry must be a file name glob");
        if (auto saved = host.state("cursor")) {
            auto c = Cursor::parse(*saved);
            if (!c) throw sb::Error(SB_ERR_INTERNAL, "stored state 'cursor' is not readable");
            cursor_ = *c;
        }
        if (auto saved = host.state("done")) {
            std::string_view s(*saved);
            while (!s.empty()) {
                std::size_t nl = s.find('\n');
                std::string_view line = s.substr(0, nl);
                s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
                FileId f;
                std::uint64_t mtime = 0;
                std::uint64_t* fields[] = {&f.ino, &f.size, &mtime};
                if (!read_numbers(line, fields, 3))
                    throw sb::Error(SB_ERR_INTERNAL, "stored state 'done' is not readable");
                f.mtime_ns = static_cast<std::int64_t>(mtime);
                f.name = std::string(line);
                done_.push_back(std::move(f));
            }
        }
    }

    void start() {
        host().info("watching " + dir_ + " for Q Genie exports (MODELLED format), " +
                    std::to_string(done_.size()) + " file(s) already done" +
                    (cursor_ ? ", resuming " + cursor_->file.name + " at row " +
                                   std::to_string(cursor_->row + 1)
                             : std::string()));
        if (!delete_processed_)
            host().info("delete_processed is false: export files stay in the drop directory "
                        "after they are read, and the operator must delete them");
    }

    // Reads one batch. SB_OK when it made progress, SB_IDLE when there was
    // nothing to do.
    sb::Status poll() {
        logs_this_poll_ = 0;
        bool progress = false;
        if (!cur_) {
            if (!open_next(progress)) return progress ? SB_OK : SB_IDLE;
            progress = true;
        }
        return read_batch() || progress ? SB_OK : SB_IDLE;
    }

    // Q Genie has no known deletion API (vendors.md §3.1): its copy of the
    // visit is deleted by the Q Genie retention setting, which the council
    // sets to 28 days. This source holds no copy of its own (its state is
    // file names and positions); export files are deleted by
    // delete_processed or by the operator.
    sb::Status erase(const sb::EraseRequest& req) {
        host().count("erase_requests");
        host().count("erase_by_vendor_retention");
        host().info("erase for record " + std::string(req.record_id) +
                    ": the vendor's copy is deleted by the Q Genie retention setting (no deletion "
                    "API is known); this source holds no copy");
        return SB_OK;
    }

private:
    struct Visit {
        std::vector<Item> items;
        std::string problem; // the file's JSON could not be split into this visit
    };
    struct Current {
        FileId id;
        qgenie::Format format = qgenie::Format::csv;
        std::string data;
        std::uint64_t pos = 0, row = 0, line = 1;
        std::uint64_t end = 0; // data.size() (CSV) or visits.size() (JSON)
        // CSV: the header's column names.
        std::vector<std::string> columns;
        // JSON: the visits.
        std::vector<Visit> visits;
        std::uint64_t emitted = 0, quarantined = 0;
        std::uint64_t quarantined_through = 0; // positions already quarantined
    };

    // --- directory ----------------------------------------------------------------

    bool matches(const char* name) const {
        for (const auto& p : patterns_)
            if (::fnmatch(p.c_str(), name, FNM_PERIOD) == 0) return true;
        return false;
    }

    std::vector<FileId> list_directory() {
        std::vector<FileId> out;
        DIR* d = ::opendir(dir_.c_str());
        if (!d) {
            if (!dir_error_logged_)
                host().error("cannot list the drop directory " + dir_ + ": " + os_error());
            dir_error_logged_ = true;
            return out;
        }
        dir_error_logged_ = false;
        while (dirent* e = ::readdir(d)) {
            if (!matches(e->d_name)) continue;
            struct stat st {};
            if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
            FileId f;
            f.name = e->d_name;
            f.ino = static_cast<std::uint64_t>(st.st_ino);
            f.size = static_cast<std::uint64_t>(st.st_size);
            f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 +
                         st.st_mtim.tv_nsec;
            out.push_back(std::move(f));
        }
        ::closedir(d);
        std::sort(out.begin(), out.end(),
                  [](const FileId& a, const FileId& b) { return a.name < b.name; });
        return out;
    }

    bool is_done(const FileId& f) const {
        return std::any_of(done_.begin(), done_.end(), [&](const FileId& d) { return d.same(f); });
    }

    void save_done() {
        std::string text;
        for (const auto& f : done_) text += f.text() + "\n";
        sb::Status s = text.empty() ? host().clear_state("done") : host().set_state("done", text);
        if (s != SB_OK) host().count("state_not_saved");
    }

    // Picks the next file to read and loads it. False when there is none;
    // `progress` is set when something was done on the way (a file
    // quarantined, the done list pruned).
    bool open_next(bool& progress) {
        std::vector<FileId> files = list_directory();
        // Forget finished files that are gone: the list stays as long as the
        // directory.
        std::size_t before = done_.size();
        std::erase_if(done_, [&](const FileId& d) {
            return std::none_of(files.begin(), files.end(),
                                [&](const FileId& f) { return f.name == d.name; });
        });
        if (done_.size() != before) save_done();

        auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
        for (const FileId& f : files) {
            if (is_done(f)) continue;
            // Settling is judged on the file system's clock, not the host's.
            if (now_ns - f.mtime_ns < settle_ms_ * 1'000'000) continue;
            if (load(f, progress)) return true;
        }
        return false;
    }

    bool load(const FileId& f, bool& progress) {
        std::string path = dir_ + "/" + f.name;
        if (f.size > max_file_) {
            std::string head = read_file(path, kQuarantineHead);
            quarantine_file(f, head,
                            "larger than max_file (" + std::to_string(f.size) + " bytes, first " +
                                std::to_string(head.size()) + " kept)");
            host().count("files_oversized");
            finish(f);
            progress = true;
            return false;
        }
        std::string data = read_file(path, max_file_ + 1);
        if (data.size() != f.size) {
            // Changed since it was listed (or unreadable): look again later.
            host().count("files_changed_while_read");
            return false;
        }
        Current cur;
        cur.id = f;
        std::string_view lower = f.name;
        auto ends_with = [&](std::string_view suffix) {
            return lower.size() >= suffix.size() &&
                   iequals(lower.substr(lower.size() - suffix.size()), suffix);
        };
        std::size_t bom = qgenie::skip_bom(data);
        if (ends_with(".json"))
            cur.format = qgenie::Format::json;
        else if (!ends_with(".csv")) { // sniff: JSON starts with { or [
            std::size_t k = data.find_first_not_of(" \t\r\n", bom);
            cur.format = k != std::string::npos && (data[k] == '{' || data[k] == '[')
                             ? qgenie::Format::json
                             : qgenie::Format::csv;
        }
        if (cur.format == qgenie::Format::csv && cp1252_ && bom == 0) data = from_cp1252(data);
        cur.data = std::move(data);
        std::string why = cur.format == qgenie::Format::csv ? read_header(cur) : split_json(cur);
        if (!why.empty()) {
            quarantine_file(f, cur.data, why);
            host().count("files_malformed");
            finish(f);
            progress = true;
            return false;
        }
        if (cursor_ && cursor_->file.same(f) && cursor_->pos >= cur.pos && cursor_->pos <= cur.end) {
            cur.pos = cursor_->pos;
            cur.row = cursor_->row;
            cur.line = cursor_->line;
            cur.quarantined_through = cur.pos;
        }
        host().count("files_started");
        host().info("reading " + f.name + " (" +
                    (cur.format == qgenie::Format::csv ? "CSV" : "JSON") + ", " +
                    std::to_string(f.size) + " bytes)" +
                    (cur.row ? " from row " + std::to_string(cur.row + 1) : std::string()));
        cur_ = std::move(cur);
        return true;
    }

    static std::string read_file(const std::string& path, std::uint64_t limit) {
        std::string out;
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return out;
        char buf[1 << 16];
        while (out.size() < limit) {
            ssize_t n = ::read(fd, buf, static_cast<std::size_t>(
                                            std::min<std::uint64_t>(sizeof buf, limit - out.size())));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            out.append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
        return out;
    }

    // CSV: reads the header row; the data starts after it. "" or the reason
    // the file cannot be read.
    std::string read_header(Current& cur) {
        qgenie::CsvReader reader(cur.data, qgenie::skip_bom(cur.data));
        qgenie::CsvRow row;
        qgenie::CsvReader::Result r;
        do {
            r = reader.next(row);
        } while (r == qgenie::CsvReader::Result::blank);
        if (r == qgenie::CsvReader::Result::end) return "no header row";
        if (r == qgenie::CsvReader::Result::error)
            return std::string("header row: ") + reader.error();
        if (!valid_utf8(cur.data.substr(row.begin, row.end - row.begin)))
            return "header row is not valid UTF-8";
        std::set<std::string> seen;
        for (auto& name : row.fields) {
            std::string key(trim(name));
            std::string folded = key;
            for (char& c : folded)
                if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
            if (!folded.empty() && !seen.insert(folded).second)
                return "column " + key + " appears twice in the header";
            cur.columns.push_back(std::move(key));
        }
        for (const auto& m : qgenie::kMapping)
            if (m.format == qgenie::Format::csv && m.required &&
                std::none_of(cur.columns.begin(), cur.columns.end(),
                             [&](const std::string& c) { return iequals(c, m.key); }))
                return "the header has no " + std::string(m.key) + " column";
        std::set<std::string> unmapped;
        for (const auto& c : cur.columns)
            if (std::none_of(std::begin(qgenie::kMapping), std::end(qgenie::kMapping),
                             [&](const qgenie::Mapping& m) {
                                 return m.format == qgenie::Format::csv && iequals(m.key, c);
                             }))
                unmapped.insert(c);
        report_unmapped(cur.id.name, "column", unmapped);
        cur.pos = reader.offset();
        cur.line = reader.line();
        cur.end = cur.data.size();
        return {};
    }

    // JSON: one visit object, or an array of them. "" or the reason the file
    // cannot be read.
    std::string split_json(Current& cur) {
        std::size_t bom = qgenie::skip_bom(cur.data);
        std::string_view text = std::string_view(cur.data).substr(bom);
        std::size_t first = text.find_first_not_of(" \t\r\n");
        bool array = first != std::string_view::npos && text[first] == '[';
        // The SDK reader takes one object: an array is read as {"v": [...]}.
        std::string wrapped;
        std::size_t shift = 0;
        if (array) {
            wrapped = "{\"v\":" + std::string(text) + "}";
            text = wrapped;
            shift = 5;
        }
        std::string key;
        std::vector<std::uint32_t> index;
        sb::detail::JsonError err;
        bool ok = sb::detail::json_leaves(
            text,
            [&](std::string_view path, const sb_value& v) {
                std::string_view rel = path;
                std::size_t visit = 0;
                if (array) { // "v[3].customer.name" -> visit 3, "customer.name"
                    std::size_t close = path.find(']');
                    std::from_chars(path.data() + 2, path.data() + close, visit);
                    rel = path.substr(close + 1);
                    if (!rel.empty() && rel.front() == '.') rel.remove_prefix(1);
                }
                if (cur.visits.size() <= visit) cur.visits.resize(visit + 1);
                Visit& vis = cur.visits[visit];
                if (rel.empty()) {
                    vis.problem = "array element is not an object";
                    return true;
                }
                Item it;
                generalise(rel, it.key, it.index);
                it.type = v.type;
                if (v.type == SB_VALUE_STRING) it.str.assign(v.str, v.len);
                it.i = v.i;
                it.f = v.f;
                vis.items.push_back(std::move(it));
                return true;
            },
            err);
        if (!ok) {
            std::size_t at = err.offset >= shift ? err.offset - shift : 0;
            cur.visits.clear();
            return std::string("not valid JSON: ") + err.message + " at byte " +
                   std::to_string(at + bom);
        }
        std::set<std::string> unmapped;
        for (const auto& vis : cur.visits)
            for (const auto& it : vis.items)
                if (std::none_of(std::begin(qgenie::kMapping), std::end(qgenie::kMapping),
                                 [&](const qgenie::Mapping& m) {
                                     return m.format == qgenie::Format::json && m.key == it.key;
                                 }))
                    unmapped.insert(it.key);
        report_unmapped(cur.id.name, "key", unmapped);
        cur.pos = 0;
        cur.end = cur.visits.size();
        return {};
    }

    // Vendor columns or keys the mapping does not know: not ingested (data
    // minimisation), named once per file so that the mapping can be extended.
    void report_unmapped(const std::string& file, const char* what,
                         const std::set<std::string>& names) {
        if (names.empty()) return;
        host().count(std::string(what) == "column" ? "columns_unmapped" : "keys_unmapped",
                     names.size());
        std::string list;
        for (const auto& n : names) {
            if (list.size() > 400) {
                list += ", ...";
                break;
            }
            list += (list.empty() ? "" : ", ") + n;
        }
        host().warn(file + ": " + std::to_string(names.size()) + " " + what +
                    "(s) not in the mapping, not ingested: " + list);
    }

    // --- reading ------------------------------------------------------------------

    struct Pending {
        std::uint64_t at = 0, len = 0; // CSV: the row's bytes
        std::uint64_t row = 0, line = 0;
    };

    // Reads up to batch_ visits of the current file and commits them with the
    // position. True if it made progress.
    bool read_batch() {
        Current& cur = *cur_;
        std::vector<sb::Record> records;
        std::vector<Pending> pending;
        std::uint64_t pos = cur.pos, row = cur.row, line = cur.line;
        bool progress = false;
        std::set<std::string> unmapped; // reported per file already

        if (cur.format == qgenie::Format::csv) {
            qgenie::CsvReader reader(cur.data, pos, line);
            qgenie::CsvRow r;
            while (records.size() < batch_) {
                auto res = reader.next(r);
                if (res == qgenie::CsvReader::Result::end) break;
                progress = true;
                pos = reader.offset();
                line = reader.line();
                if (res == qgenie::CsvReader::Result::blank) {
                    host().count("rows_blank");
                    continue;
                }
                ++row;
                std::string_view raw(cur.data.data() + r.begin, r.end - r.begin);
                auto where = "row " + std::to_string(row) + " (line " + std::to_string(r.line) + ")";
                if (res == qgenie::CsvReader::Result::error) {
                    quarantine_row(cur, raw, pos, where, reader.error());
                    continue;
                }
                if (r.fields.size() != cur.columns.size()) {
                    quarantine_row(cur, raw, pos, where,
                                   std::to_string(r.fields.size()) + " fields, the header has " +
                                       std::to_string(cur.columns.size()));
                    continue;
                }
                std::vector<Item> items(r.fields.size());
                std::string bad_column;
                for (std::size_t k = 0; k < items.size(); ++k) {
                    items[k].key = cur.columns[k];
                    items[k].str = std::move(r.fields[k]);
                    if (bad_column.empty() && !valid_utf8(items[k].str)) bad_column = cur.columns[k];
                }
                if (!bad_column.empty()) {
                    quarantine_row(cur, raw, pos, where,
                                   "column " + bad_column +
                                       " is not valid UTF-8 (is the export windows-1252? see the "
                                       "encoding key)");
                    continue;
                }
                sb::Record rec = host().record();
                auto why = build_visit(qgenie::Format::csv, items, rec, unmapped);
                if (why) {
                    quarantine_row(cur, raw, pos, where, *why);
                    continue;
                }
                records.push_back(std::move(rec));
                pending.push_back({r.begin, r.end - r.begin, row, r.line});
            }
        } else {
            while (records.size() < batch_ && pos < cur.end) {
                progress = true;
                Visit& vis = cur.visits[pos];
                ++pos;
                ++row;
                auto where = "visit " + std::to_string(row);
                std::optional<std::string> why;
                sb::Record rec = host().record();
                if (!vis.problem.empty())
                    why = vis.problem;
                else
                    why = build_visit(qgenie::Format::json, vis.items, rec, unmapped);
                if (why) {
                    quarantine_row(cur, cur.data, pos, where, *why);
                    continue;
                }
                records.push_back(std::move(rec));
                pending.push_back({0, cur.data.size(), row, 0});
            }
        }
        if (!progress) { // nothing left: the file is finished
            complete();
            return true;
        }

        Cursor next{cur.id, pos, row, line};
        std::string text = next.text();
        if (records.empty()) {
            if (host().set_state("cursor", text) != SB_OK) host().count("state_not_saved");
        } else {
            std::vector<sb::Status> results;
            std::size_t n = records.size();
            sb::Status s = host().emit_batch(records, "cursor", text.c_str(), &results);
            if (s != SB_OK) {
                // Not committed: the same rows are read again next time.
                host().count("emit_unavailable");
                throw sb::Error(s, "journal did not commit " + std::to_string(n) +
                                       " visit(s) of " + cur.id.name + "; they will be read again");
            }
            std::uint64_t ok = 0, dup = 0;
            for (std::size_t k = 0; k < n; ++k) {
                if (results[k] == SB_OK) {
                    ++ok;
                } else if (results[k] == SB_DUPLICATE) {
                    ++dup;
                } else {
                    // Committed past it, so it is kept in the quarantine.
                    host().count("visits_refused");
                    const Pending& p = pending[k];
                    std::string where = cur.format == qgenie::Format::csv
                                            ? "row " + std::to_string(p.row) + " (line " +
                                                  std::to_string(p.line) + ")"
                                            : "visit " + std::to_string(p.row);
                    quarantine(cur, std::string_view(cur.data).substr(p.at, p.len), where,
                               std::string("refused by the host (") + sb::status_name(results[k]) +
                                   ")");
                }
            }
            if (ok) host().count("visits_emitted", ok);
            if (dup) host().count("visits_duplicate", dup);
            cur.emitted += ok + dup;
        }
        cursor_ = next;
        cur.pos = pos;
        cur.row = row;
        cur.line = line;
        if (pos >= cur.end) complete();
        return true;
    }

    void quarantine_row(Current& cur, std::string_view bytes, std::uint64_t pos_after,
                        const std::string& where, const std::string& why) {
        // After a failed commit the same rows are read again: quarantine each once.
        if (pos_after <= cur.quarantined_through) return;
        cur.quarantined_through = pos_after;
        quarantine(cur, bytes, where, why);
    }

    void quarantine(Current& cur, std::string_view bytes, const std::string& where,
                    const std::string& why) {
        std::string ref = cur.id.name + " " + where;
        sb::Status s = host().quarantine(bytes, where + ": " + why, ref.c_str());
        host().count("visits_quarantined");
        if (s != SB_OK) host().count("quarantine_failed");
        ++cur.quarantined;
        if (logs_this_poll_++ < kLogsPerPoll)
            host().warn("quarantined " + ref + ": " + why);
        else if (logs_this_poll_ == kLogsPerPoll + 1)
            host().warn("more visits quarantined in this batch; see the visits_quarantined counter");
    }

    void quarantine_file(const FileId& f, std::string_view bytes, const std::string& why) {
        sb::Status s = host().quarantine(bytes, "file: " + why, f.name.c_str());
        host().count("files_quarantined");
        if (s != SB_OK) host().count("quarantine_failed");
        host().warn("quarantined " + f.name + ": " + why);
    }

    // The current file is read to its end.
    void complete() {
        Current& cur = *cur_;
        host().count("files_finished");
        host().info("finished " + cur.id.name + ": " + std::to_string(cur.emitted) +
                    " visit(s) committed, " + std::to_string(cur.quarantined) + " quarantined");
        FileId id = cur.id;
        cur_.reset();
        finish(id);
    }

    // Remembers a file as done (and deletes it with delete_processed).
    void finish(const FileId& f) {
        if (delete_processed_) {
            std::string path = dir_ + "/" + f.name;
            if (::unlink(path.c_str()) == 0) {
                host().count("files_deleted");
                host().info("deleted " + f.name + " (delete_processed)");
                return; // gone: nothing to remember
            }
            host().count("files_not_deleted");
            host().error("cannot delete " + f.name + ": " + os_error());
        }
        // A file replaced under the same name supersedes the old entry.
        std::erase_if(done_, [&](const FileId& d) { return d.name == f.name; });
        done_.push_back(f);
        save_done();
    }

    // Configuration.
    const std::string dir_;
    const std::vector<std::string> patterns_;
    const std::int64_t settle_ms_;
    const std::size_t batch_;
    const std::uint64_t max_file_;
    const bool cp1252_;
    const bool delete_processed_;

    // poll() runs on one thread per instance, so none of this is locked.
    std::optional<Cursor> cursor_;
    std::vector<FileId> done_;
    std::optional<Current> cur_;
    bool dir_error_logged_ = false;
    int logs_this_poll_ = 0;
};

} // namespace

SB_PLUGIN(QGenieSource)
