#pragma once

// The little JSON the feed client reads from the server: one object per
// message, top-level members only. Poco::JSON does the parsing; error texts
// never quote the input (they may be logged).

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace switchboard::feed::json {

class Object {
public:
    explicit Object(Poco::JSON::Object::Ptr o) : o_(std::move(o)) {}

    std::optional<std::int64_t> get_int(const std::string& key) const {
        if (!o_->has(key)) return std::nullopt;
        const Poco::Dynamic::Var& v = o_->get(key);
        if (!v.isInteger()) return std::nullopt;
        try {
            return v.convert<Poco::Int64>();
        } catch (...) {
            return std::nullopt; // beyond int64
        }
    }
    std::optional<std::string> get_string(const std::string& key) const {
        if (!o_->has(key)) return std::nullopt;
        const Poco::Dynamic::Var& v = o_->get(key);
        if (!v.isString()) return std::nullopt;
        return v.convert<std::string>();
    }
    std::optional<bool> get_bool(const std::string& key) const {
        if (!o_->has(key)) return std::nullopt;
        const Poco::Dynamic::Var& v = o_->get(key);
        if (!v.isBoolean()) return std::nullopt;
        return v.extract<bool>();
    }
    bool has_object(const std::string& key) const { return o_->has(key) && o_->isObject(key); }

private:
    Poco::JSON::Object::Ptr o_;
};

// nullopt with `error` set unless `text` is one JSON object.
inline std::optional<Object> parse_object(const std::string& text, std::string& error) {
    try {
        Poco::JSON::Parser parser;
        parser.setDepth(128);
        Poco::Dynamic::Var v = parser.parse(text);
        if (v.type() != typeid(Poco::JSON::Object::Ptr)) {
            error = "not a JSON object";
            return std::nullopt;
        }
        return Object(v.extract<Poco::JSON::Object::Ptr>());
    } catch (const std::exception&) {
        error = "not valid JSON (" + std::to_string(text.size()) + " bytes)";
        return std::nullopt;
    }
}

// A JSON text on one line: raw CR and LF can only be white space between
// tokens in valid JSON (inside strings they must be escaped), so dropping
// them changes nothing else.
inline std::string one_line(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    // A run at a time: the daemon's JSON has no raw line breaks at all.
    for (std::size_t at = 0; at < text.size();) {
        std::size_t end = text.find_first_of("\r\n", at);
        if (end == std::string_view::npos) end = text.size();
        out.append(text, at, end - at);
        at = end + 1;
    }
    return out;
}

} // namespace switchboard::feed::json
