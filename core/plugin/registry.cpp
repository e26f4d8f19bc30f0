#include "plugin/registry.hpp"

#include <algorithm>
#include <set>
#include <system_error>

namespace switchboard::plugin {

namespace {
constexpr int kMaxDepth = 4;

void collect(const std::filesystem::path& dir, int depth, std::vector<std::filesystem::path>& out) {
    std::error_code ec;
    std::vector<std::filesystem::directory_entry> entries;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
        entries.push_back(*it);
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.path() < b.path(); });
    for (const auto& e : entries) {
        std::string name = e.path().filename().string();
        if (name.empty() || name[0] == '.') continue;
        std::error_code sec;
        if (e.is_directory(sec)) {
            // Build trees keep objects in "<target>.p" directories.
            if (depth < kMaxDepth && name.size() > 2 && name.compare(name.size() - 2, 2, ".p") != 0)
                collect(e.path(), depth + 1, out);
        } else if (e.is_regular_file(sec) && name.size() > 3 &&
                   name.compare(name.size() - 3, 3, ".so") == 0) {
            out.push_back(e.path());
        }
    }
}
} // namespace

void Registry::scan(const std::vector<std::filesystem::path>& directories,
                    const LoadOptions& options) {
    std::set<std::string> files_seen;
    for (const auto& dir : directories) {
        std::error_code ec;
        if (!std::filesystem::is_directory(dir, ec)) {
            refused_.push_back({dir, "does not exist or is not a directory", true});
            continue;
        }
        std::vector<std::filesystem::path> files;
        collect(dir, 0, files);
        for (const auto& f : files) {
            files_seen.insert(f.filename().string());
            load_file(f, options);
        }
    }
    for (const auto& [file, hash] : options.pins)
        if (!files_seen.count(file)) unused_pins_.push_back(file);
}

void Registry::load_file(const std::filesystem::path& file, const LoadOptions& options) {
    Refusal refusal;
    auto plugin = load_plugin(file, options, refusal);
    if (!plugin) {
        refused_.push_back(std::move(refusal));
        return;
    }
    if (auto existing = find(plugin->name())) {
        refused_.push_back({file, "expected a unique plugin name, found '" + plugin->name() +
                                      "' already loaded from " + existing->file.string()});
        return;
    }
    plugins_.push_back(std::move(plugin));
}

std::shared_ptr<const LoadedPlugin> Registry::find(const std::string& name) const {
    for (const auto& p : plugins_)
        if (p->name() == name) return p;
    return nullptr;
}

std::vector<std::string> Registry::names() const {
    std::vector<std::string> out;
    for (const auto& p : plugins_) out.push_back(p->name());
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace switchboard::plugin
