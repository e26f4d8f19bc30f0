#pragma once

#include "plugin/library.hpp"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace switchboard::plugin {

// The plugins found in the configured directories. Every library it loads
// stays loaded for the life of the registry, and instances keep their own
// reference, so nothing is unloaded under a running pipeline.
class Registry {
public:
    // Searches each directory (recursively, up to 4 levels, so a build tree
    // works as well as an installed plugin directory) for *.so files, in
    // name order, and loads each. Refusals are kept, not thrown: a bad file
    // does not stop the others.
    void scan(const std::vector<std::filesystem::path>& directories, const LoadOptions& options);

    std::shared_ptr<const LoadedPlugin> find(const std::string& name) const;
    const std::vector<std::shared_ptr<const LoadedPlugin>>& plugins() const { return plugins_; }
    const std::vector<Refusal>& refused() const { return refused_; }
    std::vector<std::string> names() const;
    // Pins in config that matched no file (likely a typo).
    const std::vector<std::string>& unused_pins() const { return unused_pins_; }

private:
    void load_file(const std::filesystem::path& file, const LoadOptions& options);

    std::vector<std::shared_ptr<const LoadedPlugin>> plugins_;
    std::vector<Refusal> refused_;
    std::vector<std::string> unused_pins_;
};

} // namespace switchboard::plugin
