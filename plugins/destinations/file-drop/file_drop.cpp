// file-drop: writes the minimised records for legacy batch imports, one file
// per destination and UTC day, as CSV (RFC 4180) or JSON lines, in a
// directory that the department's import job reads.
//
// Atomicity: a file in the directory is only ever replaced whole. flush()
// writes each touched day's file anew — its current rows and the new ones —
// to a hidden temporary file, fsyncs it, renames it over the day's file and
// fsyncs the directory, then answers SB_OK. A reader therefore sees the old
// file or the new one, never a partial one, and a delivery is durable before
// the host counts it (the host acknowledges only after flush returns SB_OK).
// A failed flush leaves the visible file as it was; the host redelivers.
//
// Idempotency: every row carries the record id (the first CSV column, the
// "record_id" member of a JSON line). The ids in the files are indexed at
// start, so a redelivered record (a crash between write and acknowledgement,
// a retried batch) is not written twice.
//
// Erasure: erase() removes the record's row from the file it is in (the same
// atomic rewrite) and deletes a file that has no row left; the receipt says
// which file. Retention erasures do the same, so a day's file disappears when
// its last record expires.
#include <switchboard/detail/json_record.hpp>
#include <switchboard/plugin.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::int64_t kDayMs = 86'400'000;
constexpr std::size_t kMaxPending = 64u << 20; // refuse deliveries beyond this until a flush
constexpr std::size_t kCopyBlock = 1 << 20;
constexpr std::string_view kBom = "\xEF\xBB\xBF";

std::string os_error() { return std::strerror(errno); }

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

// Days since 1970-01-01 as "YYYY-MM-DD".
std::string day_text(std::int64_t day) { return sb::format_time(day * kDayMs).substr(0, 10); }

std::optional<std::int64_t> parse_day(std::string_view s) {
    if (s.size() != 10 || s[4] != '-' || s[7] != '-') return std::nullopt;
    auto ms = sb::detail::parse_time(std::string(s) + "T00:00:00Z");
    if (!ms || day_text(*ms / kDayMs) != s) return std::nullopt; // rejects 2025-02-31
    return *ms / kDayMs;
}

bool write_all(int fd, std::string_view bytes) {
    const char* p = bytes.data();
    std::size_t n = bytes.size();
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

// Reads a whole file; false with errno set on failure (ENOENT if missing).
bool read_file(const std::string& path, std::string& out) {
    out.clear();
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::string buf(kCopyBlock, '\0');
    for (;;) {
        ssize_t r = ::read(fd, buf.data(), buf.size());
        if (r < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            errno = err;
            return false;
        }
        if (r == 0) break;
        out.append(buf.data(), static_cast<std::size_t>(r));
    }
    ::close(fd);
    return true;
}

// `s` with every invalid UTF-8 sequence replaced by U+FFFD, so that the
// files are always valid UTF-8 whatever a source let through.
std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        auto c = static_cast<unsigned char>(s[i]);
        std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
        bool ok = len > 0 && i + len <= s.size();
        for (std::size_t k = 1; ok && k < len; ++k)
            ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
        if (ok && len > 1) {
            std::uint32_t cp = c & (0xFF >> (len + 1));
            for (std::size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
            static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
            ok = cp >= kMin[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
        }
        if (ok) {
            out.append(s.substr(i, len));
            i += len;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

// RFC 4180 field: quoted when it holds a comma, a quote, CR or LF (or
// starts or ends with a space, which some importers trim); quotes doubled.
void append_csv_field(std::string& out, std::string_view v) {
    bool quote = v.find_first_of(",\"\r\n") != std::string_view::npos ||
                 (!v.empty() && (v.front() == ' ' || v.back() == ' '));
    if (!quote) {
        out.append(v);
        return;
    }
    out.push_back('"');
    for (char c : v) {
        if (c == '"') out.push_back('"');
        out.push_back(c);
    }
    out.push_back('"');
}

// A plain number ("-12", "+44", "3.5") is data to a spreadsheet, not a formula.
bool plain_number(std::string_view v) {
    if (!v.empty() && (v[0] == '-' || v[0] == '+')) v.remove_prefix(1);
    if (v.empty()) return false;
    bool dot = false, digit = false;
    for (char c : v) {
        if (c >= '0' && c <= '9')
            digit = true;
        else if (c == '.' && !dot)
            dot = true;
        else
            return false;
    }
    return digit && v.back() != '.';
}

// CSV injection: a cell that a spreadsheet would evaluate as a formula.
bool formula_like(std::string_view v) {
    if (v.empty()) return false;
    char c = v[0];
    if (c == '=' || c == '@' || c == '\t' || c == '\r') return true;
    return (c == '+' || c == '-') && !plain_number(v);
}

// One row as it sits in a file: its record id and its byte range.
struct Row {
    std::string id;
    std::size_t begin = 0, end = 0;
};

// Splits CSV text into rows, decoding only the first field of each (the
// record id). A row ends at a line end outside quotes; quotes are tracked by
// parity, which is exact for RFC 4180 text ("" inside a quoted field toggles
// twice) and fast enough to rescan a day's file for each erasure. Tolerates
// LF line ends. On an unterminated quote, stops and sets `error` with the
// byte offset; rows before it stand.
std::vector<Row> csv_rows(std::string_view text, std::size_t from, std::string& error) {
    std::vector<Row> rows;
    std::size_t i = from;
    const std::size_t n = text.size();
    while (i < n) {
        Row row;
        row.begin = i;
        // The first field.
        if (text[i] == '"') {
            std::size_t k = i + 1;
            for (;;) {
                std::size_t q = text.find('"', k);
                if (q == std::string_view::npos) {
                    error = "unterminated quoted field at byte " + std::to_string(i);
                    return rows;
                }
                row.id.append(text.substr(k, q - k));
                if (q + 1 < n && text[q + 1] == '"') {
                    row.id.push_back('"');
                    k = q + 2;
                    continue;
                }
                i = q + 1;
                break;
            }
        } else {
            std::size_t e = text.find_first_of(",\r\n", i);
            if (e == std::string_view::npos) e = n;
            row.id.assign(text.substr(i, e - i));
            i = e;
        }
        // The rest of the row.
        bool quoted = false;
        while (i < n) {
            char c = text[i];
            if (c == '"') {
                quoted = !quoted;
            } else if (!quoted && (c == '\r' || c == '\n')) {
                i += (c == '\r' && i + 1 < n && text[i + 1] == '\n') ? 2 : 1;
                break;
            }
            ++i;
        }
        if (quoted) {
            error = "unterminated quoted field in the row at byte " + std::to_string(row.begin);
            return rows;
        }
        row.end = i;
        rows.push_back(std::move(row));
    }
    return rows;
}

// Lines of a JSON-lines file. Each line this plugin writes starts with
// `head` ({"<id_header>":) and the record id as a JSON string; only that
// string is decoded, so the rest of the line may hold any keys.
std::vector<Row> jsonl_rows(std::string_view text, const std::string& head, std::string& error) {
    std::vector<Row> rows;
    std::size_t i = 0;
    while (i < text.size()) {
        std::size_t nl = text.find('\n', i);
        std::size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
        std::string_view line = text.substr(i, end - i);
        Row row{{}, i, end};
        bool ok = line.substr(0, head.size()) == head && line.size() > head.size() &&
                  line[head.size()] == '"';
        if (ok) {
            std::size_t q = head.size() + 1;
            while (q < line.size() && line[q] != '"') q += line[q] == '\\' ? 2 : 1;
            ok = q < line.size();
            sb::detail::JsonError e;
            if (ok)
                ok = sb::detail::json_leaves(
                    "{\"v\":" + std::string(line.substr(head.size(), q + 1 - head.size())) + "}",
                    [&](std::string_view, const sb_value& v) {
                        if (v.type == SB_VALUE_STRING) row.id.assign(v.str, v.len);
                        return true;
                    },
                    e);
        }
        if (!ok && error.empty() && line.find_first_not_of("\r\n") != std::string_view::npos)
            error = "line at byte " + std::to_string(i) + " has no record id";
        rows.push_back(std::move(row));
        i = end;
    }
    return rows;
}

enum class Format { Csv, Jsonl };

// What a column shows: a field of the record (a leaf, or a subtree as
// JSON), an envelope value, or a delivery attribute.
struct Column {
    enum Kind { Field, Meta, Seq, Purpose, Profile, ProfileVersion } kind = Field;
    std::string source; // field path or meta key
    std::string header;
};

// The file name pattern, split into literal text and tokens.
struct Piece {
    enum Kind { Text, Destination, Date, CompactDate } kind;
    std::string text;
};

class FileDrop : public sb::Plugin {
public:
    static sb::PluginInfo info() {
        sb::PluginInfo i;
        i.name = "file-drop";
        i.version = "0.1.0";
        i.vendor = "Switchboard project";
        i.licence = "Apache-2.0";
        i.description = "Writes minimised records as one CSV or JSON-lines file per day for batch "
                        "imports; atomic, idempotent, rows erased on the retention clock";
        i.kind = SB_KIND_DESTINATION;
        // erase answers SB_PENDING after complete(), to hand over its receipt.
        i.capabilities = SB_CAP_ASYNC_ACK;
        i.config = {
            sb::Field::path("dir").required().describe(
                "Directory the files are written to (created if missing); the import job reads it"),
            sb::Field::string("format").fallback("\"csv\"").choices({"csv", "jsonl"}).describe(
                "csv (RFC 4180, UTF-8, header row) or jsonl (one JSON object per line)"),
            sb::Field::string("file_name").describe(
                "File name pattern with {destination}, {date} (YYYY-MM-DD) or {yyyymmdd}; default "
                "\"{destination}-{date}.csv\" (or .jsonl)"),
            sb::Field::string("columns").multi().describe(
                "Columns, each \"field.path\" or \"field.path=Header\"; @id, @source, @channel, "
                "@category, @occurred_at, @received_at, @expires_at, @seq, @purpose, @profile, "
                "@profile_version for the envelope; required for csv"),
            sb::Field::string("id_header").fallback("\"record_id\"").describe(
                "Header of the first column (csv) or key (jsonl) holding the record id"),
            sb::Field::boolean("formula_guard").fallback("true").describe(
                "csv: prefix text cells starting with = + - @ tab or CR (not plain numbers) with ' "
                "so that spreadsheets do not run them as formulas"),
            sb::Field::boolean("utf8_bom").fallback("false").describe(
                "csv: start each file with a UTF-8 byte order mark (for Excel)"),
        };
        return i;
    }

    explicit FileDrop(sb::Host host)
        : sb::Plugin(host),
          dir_(host.string("dir")),
          format_(host.string("format") == "jsonl" ? Format::Jsonl : Format::Csv),
          id_header_(host.string("id_header")),
          formula_guard_(host.boolean("formula_guard")),
          bom_(host.boolean("utf8_bom")),
          instance_(host.instance_name()) {
        const char* ext = format_ == Format::Csv ? ".csv" : ".jsonl";
        parse_pattern(host.string_opt("file_name").value_or(std::string("{destination}-{date}") + ext));
        parse_columns(host.list("columns"));
        if (id_header_.empty())
            throw sb::Error(SB_ERR_INVALID, "config key 'id_header': must not be empty");
        check_directory();
        if (format_ == Format::Csv) {
            header_ = bom_ ? std::string(kBom) : std::string();
            append_csv_field(header_, valid_utf8(id_header_));
            for (const Column& c : columns_) {
                header_.push_back(',');
                append_csv_field(header_, valid_utf8(c.header));
            }
            header_ += "\r\n";
        }
    }

    void start() {
        remove_stale_temporaries();
        std::size_t files = 0;
        for (const auto& [name, day] : own_files()) {
            (void)day;
            std::string text, why;
            if (!read_file(full(name), text)) {
                host().warn("cannot read " + name + " to index it: " + os_error());
                continue;
            }
            for (const Row& r : rows_of(text, why))
                if (!r.id.empty()) index_[r.id] = name;
            if (!why.empty())
                host().warn(name + " is not as this plugin writes it (" + why +
                            "); rows after that point are not indexed");
            ++files;
        }
        host().gauge("records_held", static_cast<double>(index_.size()));
        host().info("writing " + std::string(format_ == Format::Csv ? "csv" : "jsonl") + " to " + dir_ +
                    "; " + std::to_string(index_.size()) + " record(s) in " + std::to_string(files) +
                    " file(s)");
    }

    // Buffers the row; durable (and visible) only after the next flush.
    sb::Status deliver(const sb::Delivery& d) {
        std::string id(d.record_id);
        if (id.empty()) throw sb::Error(SB_ERR_PERMANENT, "delivery without a record id");
        if (index_.count(id) || pending_ids_.count(id)) {
            // Already in a file (or in this batch): a redelivery.
            host().count("duplicates_skipped");
            if (host().log_enabled(SB_LOG_DEBUG))
                host().debug("record " + id + " is already written; not written again");
            return SB_OK;
        }
        if (pending_bytes_ > kMaxPending) {
            host().count("deliveries_deferred");
            throw sb::Error(SB_ERR_TRANSIENT, "output buffer full; waiting for a flush");
        }
        std::string name = file_name(floor_div(host().now_ms(), kDayMs));
        std::string row = format_ == Format::Csv ? csv_row(id, d) : jsonl_row(id, d);
        pending_bytes_ += row.size();
        auto& rows = pending_[name];
        rows.push_back({id, std::move(row)});
        pending_ids_.insert(id);
        return SB_OK;
    }

    // Publishes each touched file atomically and durably. SB_OK only when all are.
    sb::Status flush() {
        if (pending_.empty()) return SB_OK;
        std::string why, failed_file;
        std::uint64_t rows = 0;
        bool ok = true;
        for (auto& [name, list] : pending_) {
            std::string added;
            for (const auto& p : list) added += p.text;
            if (!(ok = publish(name, &added, nullptr, why))) {
                failed_file = name;
                break;
            }
            for (const auto& p : list) index_[p.id] = name;
            rows += list.size();
        }
        if (ok && !sync_dir(why)) ok = false;
        pending_.clear();
        pending_ids_.clear();
        pending_bytes_ = 0;
        host().gauge("records_held", static_cast<double>(index_.size()));
        if (!ok) {
            host().count("flush_failures");
            // Files published before the failure keep their rows (and index
            // them); the host redelivers everything, and those are skipped.
            throw sb::Error(SB_ERR_TRANSIENT, "could not write " +
                                                  (failed_file.empty() ? dir_ : failed_file) + " (" +
                                                  why + "); the records will be delivered again");
        }
        host().count("rows_written", rows);
        return SB_OK;
    }

    // Removes the record's row from its file (atomically); the receipt says
    // where it was. Retention and requests alike.
    sb::Status erase(const sb::EraseRequest& req) {
        std::string id(req.record_id);
        const char* reason = req.reason == SB_ERASE_REQUEST ? "request" : "retention";
        std::size_t unflushed = erase_pending(id);
        std::string receipt;
        auto it = index_.find(id);
        if (it == index_.end()) {
            receipt = unflushed ? "removed before it was written" : "not present";
        } else {
            std::string name = it->second, why;
            bool emptied = false;
            if (!remove_row(name, id, emptied, why)) {
                host().count("erase_failures");
                throw sb::Error(SB_ERR_TRANSIENT, "erase of record " + id + " from " + name +
                                                      " failed (" + why + ")");
            }
            index_.erase(id);
            receipt = "removed from " + name;
            if (emptied) {
                receipt += "; file deleted (no rows left)";
                host().count("files_deleted");
                host().info("deleted " + name + ": its last record was erased (" + reason + ")");
            }
            host().count("rows_erased");
            host().gauge("records_held", static_cast<double>(index_.size()));
        }
        host().count(req.reason == SB_ERASE_REQUEST ? "erase_requests" : "erase_retention");
        if (host().log_enabled(SB_LOG_DEBUG))
            host().debug("erase of record " + id + " (" + reason + "): " + receipt);
        host().complete(req.id, SB_OK, receipt.c_str());
        return SB_PENDING;
    }

private:
    struct Pending {
        std::string id;
        std::string text; // the row, line end included
    };

    // --- configuration -----------------------------------------------------

    void parse_pattern(const std::string& p) {
        auto bad = [&](const std::string& why) {
            throw sb::Error(SB_ERR_INVALID, "config key 'file_name': \"" + p + "\" " + why);
        };
        if (p.empty()) bad("is empty");
        if (p.size() > 200) bad("is longer than 200 characters");
        if (p.find('/') != std::string::npos || p.find('\0') != std::string::npos)
            bad("must be a file name, without '/'");
        if (p[0] == '.') bad("must not start with '.' (hidden names are this plugin's temporary files)");
        int dates = 0;
        std::size_t i = 0;
        while (i < p.size()) {
            std::size_t open = p.find('{', i);
            if (open != i) {
                std::string text = p.substr(i, open == std::string::npos ? std::string::npos : open - i);
                if (text.find('}') != std::string::npos) bad("has a '}' without '{'");
                pattern_.push_back({Piece::Text, text});
                if (open == std::string::npos) break;
            }
            std::size_t close = p.find('}', open);
            if (close == std::string::npos) bad("has a '{' without '}'");
            std::string token = p.substr(open + 1, close - open - 1);
            if (token == "destination")
                pattern_.push_back({Piece::Destination, {}});
            else if (token == "date" || token == "yyyymmdd") {
                pattern_.push_back({token == "date" ? Piece::Date : Piece::CompactDate, {}});
                ++dates;
            } else
                bad("has an unknown token {" + token + "}; known: {destination}, {date}, {yyyymmdd}");
            i = close + 1;
        }
        if (dates != 1) bad("must hold exactly one of {date} and {yyyymmdd} (one file per day)");
    }

    void parse_columns(const std::vector<std::string>& list) {
        std::set<std::string> headers{id_header_};
        for (std::size_t k = 0; k < list.size(); ++k) {
            const std::string& entry = list[k];
            std::string where = "config key 'columns' [" + std::to_string(k) + "] \"" + entry + "\": ";
            std::size_t eq = entry.find('=');
            Column c;
            c.source = entry.substr(0, eq);
            c.header = eq == std::string::npos ? c.source : entry.substr(eq + 1);
            if (c.header.empty()) throw sb::Error(SB_ERR_INVALID, where + "empty header name");
            if (!c.source.empty() && c.source[0] == '@') {
                std::string key = c.source.substr(1);
                static const std::map<std::string, Column::Kind> kDelivery = {
                    {"seq", Column::Seq},
                    {"purpose", Column::Purpose},
                    {"profile", Column::Profile},
                    {"profile_version", Column::ProfileVersion}};
                static const std::set<std::string> kMeta = {"id", "source", "channel", "category",
                                                            "occurred_at", "received_at", "expires_at"};
                if (auto d = kDelivery.find(key); d != kDelivery.end())
                    c.kind = d->second;
                else if (kMeta.count(key))
                    c.kind = Column::Meta;
                else
                    throw sb::Error(SB_ERR_INVALID,
                                    where + "unknown envelope value; known: @id, @source, @channel, "
                                            "@category, @occurred_at, @received_at, @expires_at, "
                                            "@seq, @purpose, @profile, @profile_version");
                c.source = key;
            } else {
                std::vector<sb::detail::PathSegment> segs;
                if (!sb::detail::parse_path(c.source, segs))
                    throw sb::Error(SB_ERR_INVALID,
                                    where + "not a field path (e.g. citizen.address.postcode, "
                                            "content.turns[0].text)");
            }
            if (!headers.insert(c.header).second)
                throw sb::Error(SB_ERR_INVALID, where + "header \"" + c.header + "\" is used twice" +
                                                    (c.header == id_header_ ? " (it is the id_header)" : ""));
            columns_.push_back(std::move(c));
        }
        if (format_ == Format::Csv && columns_.empty())
            throw sb::Error(SB_ERR_INVALID,
                            "config key 'columns': format \"csv\" needs at least one column");
    }

    // The directory must exist (it is created) and take new files.
    void check_directory() {
        std::error_code ec;
        std::filesystem::create_directories(dir_, ec);
        if (ec || !std::filesystem::is_directory(dir_))
            throw sb::Error(SB_ERR_INVALID, "config key 'dir': cannot use directory " + dir_ + ": " +
                                                (ec ? ec.message() : "not a directory"));
        std::string probe = full(".file-drop-probe-" + std::to_string(::getpid()));
        int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            throw sb::Error(SB_ERR_INVALID,
                            "config key 'dir': cannot write to directory " + dir_ + ": " + os_error());
        ::close(fd);
        ::unlink(probe.c_str());
    }

    // --- names ---------------------------------------------------------------

    std::string file_name(std::int64_t day) const {
        std::string out;
        for (const Piece& p : pattern_) {
            switch (p.kind) {
            case Piece::Text: out += p.text; break;
            case Piece::Destination: out += instance_; break;
            case Piece::Date: out += day_text(day); break;
            case Piece::CompactDate: {
                std::string d = day_text(day);
                out += d.substr(0, 4) + d.substr(5, 2) + d.substr(8, 2);
                break;
            }
            }
        }
        return out;
    }

    // The day of one of this instance's files, or nullopt if `name` is not one.
    std::optional<std::int64_t> day_of(std::string_view name) const {
        std::optional<std::int64_t> day;
        for (const Piece& p : pattern_) {
            if (p.kind == Piece::Date || p.kind == Piece::CompactDate) {
                std::size_t n = p.kind == Piece::Date ? 10 : 8;
                if (name.size() < n) return std::nullopt;
                std::string text(name.substr(0, n));
                if (p.kind == Piece::CompactDate)
                    text = text.substr(0, 4) + "-" + text.substr(4, 2) + "-" + text.substr(6, 2);
                day = parse_day(text);
                if (!day) return std::nullopt;
                name.remove_prefix(n);
                continue;
            }
            const std::string& lit = p.kind == Piece::Text ? p.text : instance_;
            if (name.substr(0, lit.size()) != lit) return std::nullopt;
            name.remove_prefix(lit.size());
        }
        if (!name.empty() || !day) return std::nullopt;
        return day;
    }

    std::vector<std::pair<std::string, std::int64_t>> own_files() const {
        std::vector<std::pair<std::string, std::int64_t>> out;
        DIR* d = ::opendir(dir_.c_str());
        if (!d) return out;
        while (dirent* e = ::readdir(d))
            if (auto day = day_of(e->d_name)) out.emplace_back(e->d_name, *day);
        ::closedir(d);
        std::sort(out.begin(), out.end());
        return out;
    }

    std::string full(const std::string& name) const { return dir_ + "/" + name; }
    static std::string temporary(const std::string& name) { return "." + name + ".tmp"; }

    // --- rows ------------------------------------------------------------------

    std::vector<Row> rows_of(std::string_view text, std::string& why) const {
        if (format_ == Format::Jsonl) return jsonl_rows(text, "{" + sb::json_quote(id_header_) + ":", why);
        std::size_t from = text.substr(0, kBom.size()) == kBom ? kBom.size() : 0;
        // The header row is not a record.
        std::vector<Row> rows = csv_rows(text, from, why);
        if (!rows.empty()) rows.erase(rows.begin());
        return rows;
    }

    // A field as CSV text: a leaf's value, or a subtree (list, object) as
    // JSON; empty if absent.
    struct Cell {
        enum Kind { Absent, Text, Json } kind = Absent;
        std::string value; // Text: the value; Json: JSON text
    };

    static Cell field_cell(const sb::RecordView& rec, const std::string& path) {
        Cell c;
        if (auto f = rec.get(path.c_str())) {
            switch (f->value.type) {
            case SB_VALUE_STRING: c = {Cell::Text, std::string(f->str())}; break;
            case SB_VALUE_INT: c = {Cell::Json, std::to_string(f->value.i)}; break;
            case SB_VALUE_FLOAT: {
                std::string s;
                sb::detail::append_json_double(s, f->value.f);
                c = {Cell::Json, s};
                break;
            }
            case SB_VALUE_BOOL: c = {Cell::Json, f->value.i ? "true" : "false"}; break;
            default: break; // null: an empty cell, null in JSON lines
            }
            return c;
        }
        // A subtree: its leaves re-rooted under "v", written as JSON.
        sb::detail::RecordData sub;
        bool any = false;
        for (std::size_t k = 0, n = rec.size(); k < n; ++k) {
            sb::FieldView f = rec.at(k);
            if (f.path.size() <= path.size() || f.path.substr(0, path.size()) != path) continue;
            char next = f.path[path.size()];
            if (next != '.' && next != '[') continue;
            std::string rel = "v" + std::string(f.path.substr(path.size()));
            if (sub.set(rel, f.value, nullptr) == SB_OK) any = true;
        }
        if (!any) return c;
        std::string json;
        sub.write_fields_json(json); // {"v":<subtree>}
        return {Cell::Json, json.substr(5, json.size() - 6)};
    }

    static Cell column_cell(const Column& col, const sb::Delivery& d) {
        switch (col.kind) {
        case Column::Field: return field_cell(d.record, col.source);
        case Column::Meta: {
            auto v = d.record.meta(col.source.c_str());
            return v ? Cell{Cell::Text, std::string(*v)} : Cell{};
        }
        case Column::Seq: return {Cell::Json, std::to_string(d.sequence)};
        case Column::Purpose: return {Cell::Text, std::string(d.purpose)};
        case Column::Profile: return {Cell::Text, std::string(d.profile)};
        case Column::ProfileVersion: return {Cell::Json, std::to_string(d.profile_version)};
        }
        return {};
    }

    std::string csv_row(const std::string& id, const sb::Delivery& d) const {
        std::string out;
        append_csv_field(out, valid_utf8(id));
        for (const Column& col : columns_) {
            out.push_back(',');
            Cell c = column_cell(col, d);
            if (c.kind == Cell::Absent) continue;
            std::string v = valid_utf8(c.value);
            if (c.kind == Cell::Text && formula_guard_ && formula_like(v)) {
                v.insert(0, "'");
                host().count("cells_guarded");
            }
            append_csv_field(out, v);
        }
        out += "\r\n";
        return out;
    }

    std::string jsonl_row(const std::string& id, const sb::Delivery& d) const {
        std::string out = "{" + sb::json_quote(id_header_) + ":" + sb::json_quote(id);
        if (columns_.empty()) {
            out += ",\"seq\":" + std::to_string(d.sequence);
            out += ",\"purpose\":" + sb::json_quote(d.purpose);
            out += ",\"profile\":" + sb::json_quote(d.profile);
            out += ",\"profile_version\":" + std::to_string(d.profile_version);
            std::string_view rec = d.record.json();
            out += ",\"record\":";
            out += rec.empty() ? std::string_view("null") : rec;
        } else {
            for (const Column& col : columns_) {
                Cell c = column_cell(col, d);
                out += "," + sb::json_quote(col.header) + ":";
                out += c.kind == Cell::Absent ? "null" : c.kind == Cell::Text ? sb::json_quote(c.value) : c.value;
            }
        }
        out += "}\n";
        return out;
    }

    // --- files -----------------------------------------------------------------

    // Replaces `name` atomically: its current content (or a header for a new
    // file) plus `append`, or — with `drop` — without the rows whose id is
    // *drop. A file left without rows is deleted instead (`emptied`).
    bool publish(const std::string& name, const std::string* append, const std::string* drop,
                 std::string& why, bool* emptied = nullptr) {
        std::string current;
        bool exists = read_file(full(name), current);
        if (!exists && errno != ENOENT) {
            why = "read " + name + ": " + os_error();
            return false;
        }
        std::string next;
        if (drop) {
            std::string parse_error;
            std::vector<Row> rows = rows_of(current, parse_error);
            std::size_t body_start = rows.empty() ? current.size() : rows.front().begin;
            std::size_t parsed_end = rows.empty() ? body_start : rows.back().end;
            next = current.substr(0, body_start);
            std::size_t kept = 0;
            for (const Row& r : rows) {
                if (r.id == *drop) continue;
                next.append(current, r.begin, r.end - r.begin);
                if (!r.id.empty()) ++kept;
            }
            next.append(current, parsed_end, std::string::npos); // anything unparsed stays
            if (kept == 0 && parsed_end == current.size()) {
                if (::unlink(full(name).c_str()) != 0 && errno != ENOENT) {
                    why = "delete " + name + ": " + os_error();
                    return false;
                }
                if (emptied) *emptied = true;
                return sync_dir(why);
            }
        } else {
            next = exists && !current.empty() ? std::move(current) : header_;
            if (append) next += *append;
        }
        const std::string tmp = full(temporary(name));
        int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (fd < 0) {
            why = "create " + temporary(name) + ": " + os_error();
            return false;
        }
        bool ok = write_all(fd, next);
        if (!ok) why = "write " + temporary(name) + ": " + os_error();
        if (ok && ::fsync(fd) != 0) {
            ok = false;
            why = "fsync " + temporary(name) + ": " + os_error();
        }
        ::close(fd);
        if (ok && ::rename(tmp.c_str(), full(name).c_str()) != 0) {
            ok = false;
            why = "rename to " + name + ": " + os_error();
        }
        if (!ok) {
            ::unlink(tmp.c_str());
            return false;
        }
        if (!exists) host().count("files_created");
        return true;
    }

    bool remove_row(const std::string& name, const std::string& id, bool& emptied, std::string& why) {
        emptied = false;
        if (!publish(name, nullptr, &id, why, &emptied)) return false;
        return emptied || sync_dir(why);
    }

    std::size_t erase_pending(const std::string& id) {
        if (!pending_ids_.erase(id)) return 0;
        std::size_t removed = 0;
        for (auto it = pending_.begin(); it != pending_.end();) {
            auto& list = it->second;
            for (auto r = list.begin(); r != list.end();) {
                if (r->id == id) {
                    pending_bytes_ -= r->text.size();
                    r = list.erase(r);
                    ++removed;
                } else {
                    ++r;
                }
            }
            it = list.empty() ? pending_.erase(it) : std::next(it);
        }
        return removed;
    }

    bool sync_dir(std::string& why) const {
        int fd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
            why = "open directory " + dir_ + ": " + os_error();
            return false;
        }
        bool ok = ::fsync(fd) == 0;
        if (!ok) why = "fsync directory " + dir_ + ": " + os_error();
        ::close(fd);
        return ok;
    }

    // Left by a flush or an erase interrupted by a crash; the file it was to
    // replace is intact.
    void remove_stale_temporaries() {
        DIR* d = ::opendir(dir_.c_str());
        if (!d) return;
        std::vector<std::string> stale;
        while (dirent* e = ::readdir(d)) {
            std::string_view n(e->d_name);
            if (n.size() > 5 && n[0] == '.' && n.substr(n.size() - 4) == ".tmp" &&
                day_of(n.substr(1, n.size() - 5)))
                stale.emplace_back(n);
        }
        ::closedir(d);
        for (const auto& n : stale) {
            ::unlink(full(n).c_str());
            host().info("removed " + n + ", left by an interrupted write");
        }
    }

    // Configuration.
    const std::string dir_;
    const Format format_;
    const std::string id_header_;
    const bool formula_guard_;
    const bool bom_;
    const std::string instance_;
    std::vector<Piece> pattern_;
    std::vector<Column> columns_;
    std::string header_; // csv: the header row (with the BOM if asked)

    // Queue and retention threads, never at once (the host serialises them).
    std::map<std::string, std::string> index_;             // record id -> file holding its row
    std::map<std::string, std::vector<Pending>> pending_;  // file -> rows to add at the flush
    std::set<std::string> pending_ids_;
    std::size_t pending_bytes_ = 0;
};

} // namespace

SB_PLUGIN(FileDrop)
