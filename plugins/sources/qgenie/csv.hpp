// Q Genie (MODELLED): an RFC 4180 reader for the nightly export, over bytes
// held in memory.
//
// What it accepts, beyond the letter of RFC 4180 (exports are written by
// many tools):
//   - rows end with CRLF, LF or a lone CR; the last row may have no end;
//   - a field in double quotes may hold commas, line breaks and doubled
//     quotes (""); a line break inside quotes is kept as "\n" (CRLF and a
//     lone CR are normalised to LF, so text reads the same whatever wrote it);
//   - a UTF-8 byte order mark at the start of the data is skipped (by the
//     caller: see skip_bom).
// What it refuses, per row, with a reason that never quotes the data:
//   - a quote inside an unquoted field (a"b);
//   - anything but a comma or a row end after a closing quote ("a"b);
//   - a quoted field still open at the end of the data.
// After a refused row, reading resumes at the next row end outside quotes as
// far as it can be told: the rest of the physical line is skipped (for an
// unclosed quote, everything to the end of the data).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qgenie {

inline std::size_t skip_bom(std::string_view data) {
    return data.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
}

struct CsvRow {
    std::vector<std::string> fields;
    std::size_t begin = 0; // byte offset of the row's first byte
    std::size_t end = 0;   // byte offset just past its terminator
    std::uint64_t line = 1; // physical line on which the row starts
};

class CsvReader {
public:
    enum class Result { row, blank, error, end };

    explicit CsvReader(std::string_view data, std::size_t offset = 0, std::uint64_t line = 1)
        : d_(data), p_(offset), line_(line) {}

    std::size_t offset() const { return p_; }
    std::uint64_t line() const { return line_; }
    // Why the last row was refused (a fixed text, no data).
    const char* error() const { return error_; }

    // Reads the next row into `row`. `blank` for an empty line (fields left
    // empty), `error` for a refused row (row.begin/end span the bytes skipped),
    // `end` when the data is exhausted.
    Result next(CsvRow& row) {
        row.fields.clear();
        row.begin = p_;
        row.line = line_;
        error_ = nullptr;
        if (p_ >= d_.size()) return Result::end;
        if (at_row_end()) {
            eat_row_end();
            row.end = p_;
            return Result::blank;
        }
        std::string field;
        for (;;) {
            field.clear();
            bool ok = d_[p_] == '"' ? quoted(field) : unquoted(field);
            if (!ok) {
                skip_rest();
                row.end = p_;
                row.fields.clear();
                return Result::error;
            }
            row.fields.push_back(std::move(field));
            if (p_ >= d_.size()) break;
            if (d_[p_] == ',') {
                ++p_;
                if (p_ >= d_.size()) { // "a,<end>": a last, empty field
                    row.fields.emplace_back();
                    break;
                }
                continue;
            }
            eat_row_end(); // at_row_end() holds here
            break;
        }
        row.end = p_;
        return Result::row;
    }

private:
    bool at_row_end() const { return p_ < d_.size() && (d_[p_] == '\n' || d_[p_] == '\r'); }

    void eat_row_end() {
        if (d_[p_] == '\r' && p_ + 1 < d_.size() && d_[p_ + 1] == '\n') ++p_;
        ++p_;
        ++line_;
    }

    bool unquoted(std::string& out) {
        std::size_t start = p_;
        while (p_ < d_.size()) {
            char c = d_[p_];
            if (c == ',' || c == '\n' || c == '\r') break;
            if (c == '"') {
                error_ = "a double quote inside an unquoted field";
                return false;
            }
            ++p_;
        }
        out.assign(d_.substr(start, p_ - start));
        return true;
    }

    bool quoted(std::string& out) {
        ++p_; // the opening quote
        for (;;) {
            std::size_t q = d_.find_first_of("\"\r\n", p_);
            if (q == std::string_view::npos) {
                p_ = d_.size();
                error_ = "a quoted field is not closed before the end of the file";
                return false;
            }
            out.append(d_.substr(p_, q - p_));
            p_ = q;
            char c = d_[p_];
            if (c == '\r' || c == '\n') { // a line break inside the field
                eat_row_end();
                out.push_back('\n');
                continue;
            }
            ++p_; // a quote: doubled, or the end of the field
            if (p_ < d_.size() && d_[p_] == '"') {
                out.push_back('"');
                ++p_;
                continue;
            }
            if (p_ < d_.size() && d_[p_] != ',' && d_[p_] != '\n' && d_[p_] != '\r') {
                error_ = "text after a closing double quote";
                return false;
            }
            return true;
        }
    }

    // After an error: on to the next row end (or the end of the data).
    void skip_rest() {
        while (p_ < d_.size() && !at_row_end()) ++p_;
        if (p_ < d_.size()) eat_row_end();
    }

    std::string_view d_;
    std::size_t p_;
    std::uint64_t line_;
    const char* error_ = nullptr;
};

} // namespace qgenie
