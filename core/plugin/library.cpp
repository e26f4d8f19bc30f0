#include "plugin/library.hpp"

#include "config/schema.hpp"
#include "util/sha256.hpp"

#include <boost/dll/shared_library.hpp>


namespace switchboard::plugin {

std::string check_descriptor(const sb_plugin_descriptor* d, sb::detail::Descriptor& out) {
    std::string problem = sb::detail::read_descriptor(d, out);
    if (!problem.empty()) return problem;
    std::vector<std::string> problems;
    config::spec_from_plugin(out.descriptor.config_fields, out.descriptor.n_config_fields, problems);
    if (!problems.empty()) return "config schema: " + problems.front();
    return {};
}

std::shared_ptr<const LoadedPlugin> load_plugin(const std::filesystem::path& file,
                                                const LoadOptions& options, Refusal& refusal) {
    refusal.file = file;
    auto plugin = std::make_shared<LoadedPlugin>();
    plugin->file = file;

    std::string name = file.filename().string();
    auto pin = options.pins.find(name);
    if (pin != options.pins.end()) {
        std::string error;
        auto actual = sha256_file(file, error);
        if (!actual) {
            refusal.reason = "cannot hash file: " + error;
            return nullptr;
        }
        if (*actual != pin->second) {
            refusal.reason = "expected sha256 " + pin->second + ", found " + *actual;
            return nullptr;
        }
        plugin->sha256 = *actual;
    } else if (options.require_pins) {
        refusal.reason = "expected a sha256 pin (plugins.require_pins is set), found none";
        return nullptr;
    }

    auto lib = std::make_shared<boost::dll::shared_library>();
    boost::dll::fs::error_code ec;
    lib->load(boost::dll::fs::path(file.string()),
              boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
    if (ec || !lib->is_loaded()) {
        refusal.reason = "cannot load library: " + ec.message();
        return nullptr;
    }
    if (!lib->has(SB_ENTRY_POINT)) {
        refusal.reason = std::string("expected entry point ") + SB_ENTRY_POINT +
                         ", found none (not a Switchboard plugin)";
        return nullptr;
    }
    auto entry = lib->get<const sb_plugin_descriptor*()>(SB_ENTRY_POINT);
    std::string problem = check_descriptor(entry(), plugin->normalized);
    if (!problem.empty()) {
        refusal.reason = problem;
        return nullptr;
    }
    plugin->library = std::move(lib);
    plugin->descriptor = &plugin->normalized.descriptor;
    return plugin;
}

} // namespace switchboard::plugin
