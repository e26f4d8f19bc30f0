#include "config/loader.hpp"

#include <fstream>
#include <set>
#include <sstream>

namespace switchboard::config {

namespace {

constexpr int kMaxIncludeDepth = 8;
constexpr std::uintmax_t kMaxConfigBytes = 4 * 1024 * 1024;

void merge(toml::table& into, toml::table&& from, const std::string& path, Diagnostics& out);

// Moves (never copies: copies lose their source positions) `value` into
// `into` under `key`.
void insert_moved(toml::table& into, const toml::key& key, toml::node&& value) {
    if (auto* t = value.as_table()) into.insert(key, std::move(*t));
    else if (auto* a = value.as_array()) into.insert(key, std::move(*a));
    else if (auto* s = value.as_string()) into.insert(key, std::move(*s));
    else if (auto* i = value.as_integer()) into.insert(key, std::move(*i));
    else if (auto* f = value.as_floating_point()) into.insert(key, std::move(*f));
    else if (auto* b = value.as_boolean()) into.insert(key, std::move(*b));
    else if (auto* d = value.as_date()) into.insert(key, std::move(*d));
    else if (auto* tm = value.as_time()) into.insert(key, std::move(*tm));
    else if (auto* dt = value.as_date_time()) into.insert(key, std::move(*dt));
}

bool is_array_of_tables(const toml::node& n) {
    return n.is_array() && n.as_array()->is_array_of_tables();
}

void merge(toml::table& into, toml::table&& from, const std::string& path, Diagnostics& out) {
    for (auto&& [key, value] : from) {
        std::string child = join_path(path, key.str());
        toml::node* existing = into.get(key.str());
        if (!existing) {
            insert_moved(into, key, std::move(value));
        } else if (existing->is_table() && value.is_table()) {
            merge(*existing->as_table(), std::move(*value.as_table()), child, out);
        } else if (is_array_of_tables(*existing) && is_array_of_tables(value)) {
            for (auto& element : *value.as_array())
                existing->as_array()->push_back(std::move(*element.as_table()));
        } else {
            Location first = location_of(*existing);
            out.error(location_of(key), child,
                      "defined again; first defined at " + first.file + ":" +
                          std::to_string(first.line) + ":" + std::to_string(first.column));
        }
    }
}

std::optional<toml::table> parse_one(const std::filesystem::path& file, Diagnostics& out,
                                     const Location& from) {
    std::error_code ec;
    auto size = std::filesystem::file_size(file, ec);
    if (ec) {
        out.error(from, "", "cannot read " + file.string() + ": " + ec.message());
        return std::nullopt;
    }
    if (size > kMaxConfigBytes) {
        out.error(from, "", file.string() + " is larger than 4 MiB; refusing to read it");
        return std::nullopt;
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        out.error(from, "", "cannot open " + file.string());
        return std::nullopt;
    }
    std::ostringstream buf;
    buf << in.rdbuf();
    try {
        return toml::parse(buf.str(), file.string());
    } catch (const toml::parse_error& e) {
        out.error(location_of(e.source()), "", std::string(e.description()));
        return std::nullopt;
    }
}

toml::table load_recursive(const std::filesystem::path& file, Diagnostics& out, int depth,
                           std::set<std::filesystem::path>& stack, const Location& from,
                           bool& complete) {
    std::error_code ec;
    std::filesystem::path canonical = std::filesystem::weakly_canonical(file, ec);
    if (ec) canonical = file;
    if (stack.count(canonical)) {
        out.error(from, "include", "include cycle: " + file.string() + " includes itself");
        return {};
    }
    if (depth > kMaxIncludeDepth) {
        out.error(from, "include", "includes nest deeper than " + std::to_string(kMaxIncludeDepth));
        return {};
    }
    auto parsed = parse_one(file, out, from);
    if (!parsed) {
        complete = false;
        return {};
    }
    toml::table root = std::move(*parsed);
    stack.insert(canonical);

    if (toml::node* inc = root.get("include")) {
        std::vector<std::pair<std::string, Location>> targets;
        auto add = [&](const toml::node& n) {
            if (n.is_string())
                targets.emplace_back(n.as_string()->get(), location_of(n));
            else
                out.error(location_of(n), "include",
                          std::string("expected a path (string), found ") + type_name(n));
        };
        if (inc->is_array())
            for (auto& n : *inc->as_array()) add(n);
        else
            add(*inc);
        root.erase("include");
        for (auto& [target, where] : targets) {
            std::filesystem::path p = target;
            if (p.is_relative()) p = file.parent_path() / p;
            toml::table included = load_recursive(p, out, depth + 1, stack, where, complete);
            merge(root, std::move(included), "", out);
        }
    }
    stack.erase(canonical);
    return root;
}

} // namespace

toml::table load_files(const std::filesystem::path& file, Diagnostics& out, bool& complete) {
    std::set<std::filesystem::path> stack;
    Location from{file.string(), 0, 0};
    complete = true;
    return load_recursive(file, out, 0, stack, from, complete);
}

} // namespace switchboard::config
